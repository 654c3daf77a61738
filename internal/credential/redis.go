package credential

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Backend over one Redis server (or anything speaking its
// protocol). Expiry is Redis's own, so every instance shares one clock.
// The Version is the value itself: sealed values carry a random nonce,
// so a value never comes back and compare-by-value has no ABA problem.
type Redis struct {
	c      *redis.Client
	prefix string
}

// NewRedis opens a client; it connects lazily, so a down server is an
// error on the first call, not here. The client honours each call's
// context deadline.
func NewRedis(opts *redis.Options, prefix string) *Redis {
	o := *opts
	o.ContextTimeoutEnabled = true
	o.DisableIdentity = true // no CLIENT SETINFO round trip per new connection
	return &Redis{c: redis.NewClient(&o), prefix: prefix}
}

// The scripts run atomically on the server: a compare and its write
// cannot be split by another client.
var (
	redisCAS = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1`)

	redisDeleteIf = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0`)

	// INCR fails on a value that is not a number: start over at 1.
	redisIncr = redis.NewScript(`
local n = redis.pcall('INCR', KEYS[1])
if type(n) == 'table' then
  redis.call('SET', KEYS[1], 1)
  n = 1
end
if n == 1 and tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`)
)

func (r *Redis) Get(ctx context.Context, key string) ([]byte, Version, error) {
	v, err := r.c.Get(ctx, r.prefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil, ErrNotFound
	}
	if err != nil {
		return nil, nil, redisErr("get", err)
	}
	return v, string(v), nil
}

func (r *Redis) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ok, err := r.c.SetNX(ctx, r.prefix+key, value, ttl).Result()
	return ok, redisErr("add", err)
}

func (r *Redis) CompareAndSwap(ctx context.Context, key string, ver Version, value []byte, ttl time.Duration) (bool, error) {
	old, ok := ver.(string)
	if !ok {
		return false, fmt.Errorf("redis: compare-and-swap: version of type %T is not from this store", ver)
	}
	n, err := redisCAS.Run(ctx, r.c, []string{r.prefix + key}, old, value, ttl.Milliseconds()).Int()
	return n == 1, redisErr("compare-and-swap", err)
}

func (r *Redis) DeleteIf(ctx context.Context, key string, value []byte) error {
	return redisErr("delete-if", redisDeleteIf.Run(ctx, r.c, []string{r.prefix + key}, value).Err())
}

func (r *Redis) Delete(ctx context.Context, key string) error {
	return redisErr("delete", r.c.Del(ctx, r.prefix+key).Err())
}

func (r *Redis) Incr(ctx context.Context, key string, ttl time.Duration) (int64, error) {
	n, err := redisIncr.Run(ctx, r.c, []string{r.prefix + key}, ttl.Milliseconds()).Int64()
	return n, redisErr("incr", err)
}

func (r *Redis) Close() error { return r.c.Close() }

// redisErr names the operation; go-redis errors carry no password.
func redisErr(op string, err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return nil
	}
	return fmt.Errorf("redis %s: %w", op, err)
}
