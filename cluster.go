package wechat

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

// sharedStore is the cluster-wide home of an account's token. The only
// implementation is memcache; with none configured the token lives in
// process.
type sharedStore interface {
	// obtain returns a token that is not bad: a peer's from the store, or
	// one fetched under the cluster lease and then stored.
	obtain(ctx context.Context, bad string, ahead bool) (*tokenEntry, error)
	// peek returns the stored token, if any, without fetching.
	peek(ctx context.Context) (*tokenEntry, bool)
	// countFetch adds one fetch to the cluster's count for day and
	// returns the totals; ok is false when the store could not count.
	countFetch(ctx context.Context, day string, force bool) (total, forced int64, ok bool)
	// breakerOpen reports whether the store is being skipped after errors.
	breakerOpen(now time.Time) bool
	close()
}

// storeConfig is the memcache part of the transport's config.
type storeConfig struct {
	servers []string
	prefix  string
	timeout time.Duration
}

func (t *Transport) storeConfig() storeConfig {
	sc := storeConfig{servers: t.Memcache, prefix: t.MemcachePrefix, timeout: time.Duration(t.MemcacheTimeout)}
	if sc.prefix == "" {
		sc.prefix = "wechat:"
	}
	if sc.timeout <= 0 {
		sc.timeout = 100 * time.Millisecond
	}
	return sc
}

// The cluster protocol over memcache: read, lease, fetch, compare-and-swap,
// wait for the lease holder.

// read returns the stored token (nil on a miss or unusable value) and the
// raw item for a compare-and-swap.
func (s *memcacheStore) read() (*tokenEntry, *memcache.Item, error) {
	s.attempts.Add(1)
	it, err := s.c.Get(s.tokenKey)
	if s.done("get", err) {
		return nil, nil, errMemcacheDown
	}
	if err != nil {
		return nil, nil, nil // miss
	}
	return s.decode(it), it, nil
}

// obtain: a usable stored token, else the lease and a fetch, else wait for
// the lease holder's token.
func (s *memcacheStore) obtain(ctx context.Context, bad string, ahead bool) (*tokenEntry, error) {
	if !s.allow() {
		return s.fetch(ctx, bad)
	}
	e, _, err := s.read()
	if err != nil {
		return s.fetch(ctx, bad)
	}
	if s.usable(e, bad, ahead) {
		return e, nil
	}
	ttl := s.leaseTTL()
	for {
		lease, won, err := s.acquire(ttl)
		if err != nil {
			return s.fetch(ctx, bad) // lease unknown: keep requests working
		}
		if won {
			return s.lead(ctx, bad, ahead, lease)
		}
		e, err := s.wait(ctx, bad, ahead)
		switch {
		case errors.Is(err, errMemcacheDown):
			return s.fetch(ctx, bad)
		case err != nil:
			return nil, fmt.Errorf("waiting for another instance to fetch the access_token: %w", err)
		case e != nil:
			return e, nil
		}
		// The lease is gone with no usable token: the holder failed or
		// died. Try to take over.
	}
}

// acquire tries to take the cluster lease.
func (s *memcacheStore) acquire(ttl int32) (lease string, won bool, err error) {
	var b [12]byte
	_, _ = crand.Read(b[:])
	lease = hex.EncodeToString(b[:])
	s.attempts.Add(1)
	err = s.c.Add(&memcache.Item{Key: s.leaseKey, Value: []byte(lease), Expiration: ttl})
	if s.done("add", err) {
		return "", false, errMemcacheDown
	}
	return lease, err == nil, nil
}

// release drops the lease if it is still ours: a holder that outlived its
// lease must not delete its successor's.
func (s *memcacheStore) release(lease string) {
	if s.breakerOpen(time.Time{}) {
		return // it expires by itself
	}
	s.attempts.Add(1)
	it, err := s.c.Get(s.leaseKey)
	if s.done("get", err) || err != nil || string(it.Value) != lease {
		return
	}
	s.attempts.Add(1)
	s.done("delete", s.c.Delete(s.leaseKey))
}

// lead runs under the lease: re-check the store (a peer may have stored a
// token between our read and our lease), else fetch and store.
func (s *memcacheStore) lead(ctx context.Context, bad string, ahead bool, lease string) (*tokenEntry, error) {
	defer s.release(lease)
	e, _, err := s.read()
	if err != nil {
		return s.fetch(ctx, bad) // memcache just failed: do not try to store
	}
	if s.usable(e, bad, ahead) {
		return e, nil
	}
	fresh, err := s.fetch(ctx, bad)
	if err != nil {
		return nil, err
	}
	return s.save(fresh, bad), nil
}

// save stores fresh unless a newer usable token is already stored, and
// returns the newer of the two. It never overwrites a newer token: it
// writes with Add when the key is empty and compare-and-swap otherwise.
func (s *memcacheStore) save(fresh *tokenEntry, bad string) *tokenEntry {
	ttl := s.ttlSeconds(fresh)
	if ttl <= 0 || s.breakerOpen(time.Time{}) {
		return fresh
	}
	for range saveAttempts {
		old, it, err := s.read()
		if err != nil {
			return fresh
		}
		if old != nil && old.Value != bad && !old.FetchedAt.Before(fresh.FetchedAt) && s.a.now().Before(old.useBy) {
			if old.FetchedAt.After(fresh.FetchedAt) {
				return old // a peer stored a newer token: use it, keep it
			}
			return fresh // ours already
		}
		item := &memcache.Item{Key: s.tokenKey, Value: encodeEntry(fresh), Expiration: ttl}
		op := "add"
		s.attempts.Add(1)
		if it == nil {
			err = s.c.Add(item)
		} else {
			op, item.CasID = "cas", it.CasID
			err = s.c.CompareAndSwap(item)
		}
		if s.done(op, err) {
			return fresh
		}
		if err == nil {
			s.badLogged.Store(false)
			return fresh
		}
		// Someone wrote in between: look again.
	}
	return fresh
}

// wait polls for the lease holder's token. It returns the token, or nil
// with no error once the lease is gone without one.
func (s *memcacheStore) wait(ctx context.Context, bad string, ahead bool) (*tokenEntry, error) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Reset(leasePollMin + rand.N(leasePollJitter))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
		}
		s.attempts.Add(1)
		items, err := s.c.GetMulti([]string{s.tokenKey, s.leaseKey})
		if s.done("get", err) {
			return nil, errMemcacheDown
		}
		if e := s.decode(items[s.tokenKey]); s.usable(e, bad, ahead) {
			return e, nil
		}
		if items[s.leaseKey] == nil {
			return nil, nil
		}
	}
}

// peek reads the stored token for the refresher. If memcache has none (it
// restarted or was flushed) and the account holds a good token, it writes
// that one back, so the cluster finds it again.
func (s *memcacheStore) peek(ctx context.Context) (*tokenEntry, bool) {
	if ctx.Err() != nil || !s.allow() {
		return nil, false
	}
	e, _, err := s.read()
	if err != nil {
		return nil, false
	}
	if e == nil {
		if cur := s.a.cur.Load(); cur != nil && s.usable(cur, s.a.badToken(), false) {
			s.save(cur, s.a.badToken())
		}
		return nil, false
	}
	return e, true
}

// countFetch adds one fetch to the cluster's daily count.
func (s *memcacheStore) countFetch(ctx context.Context, day string, force bool) (total, forced int64, ok bool) {
	if ctx.Err() != nil || !s.allow() {
		return 0, 0, false
	}
	total, ok = s.incr(s.base + ":fetches:" + day)
	if !ok {
		return 0, 0, false
	}
	forcedKey := s.base + ":forced:" + day
	if force {
		forced, ok = s.incr(forcedKey)
		return total, forced, ok
	}
	s.attempts.Add(1)
	it, err := s.c.Get(forcedKey)
	if s.done("get", err) {
		return 0, 0, false
	}
	if err == nil {
		n, perr := strconv.ParseInt(strings.TrimSpace(string(it.Value)), 10, 64)
		if perr != nil {
			return 0, 0, false
		}
		forced = n
	}
	return total, forced, true
}

// incr increments a daily counter, creating it if missing.
func (s *memcacheStore) incr(key string) (int64, bool) {
	for range 3 {
		s.attempts.Add(1)
		n, err := s.c.Increment(key, 1)
		if err == nil {
			s.succeeded()
			return int64(n), true
		}
		switch {
		case errors.Is(err, memcache.ErrCacheMiss):
			s.attempts.Add(1)
			err = s.c.Add(&memcache.Item{Key: key, Value: []byte("0"), Expiration: counterTTL})
			if s.done("add", err) {
				return 0, false
			}
		case strings.HasPrefix(err.Error(), "memcache: client error"):
			// Not a number: memcache answered, the value is junk.
			// Start the count again.
			s.succeeded()
			s.attempts.Add(1)
			if s.done("delete", s.c.Delete(key)) {
				return 0, false
			}
		default:
			s.failed("incr", err)
			return 0, false
		}
	}
	return 0, false
}

func (s *memcacheConn) close() { _ = s.c.Close() }

var _ sharedStore = (*memcacheStore)(nil)
