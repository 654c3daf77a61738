package wechat

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"go.uber.org/zap"
)

// memcacheStore shares an account's token across a cluster through
// memcache. Keys, for base = prefix + account key:
//
//	base                  the token: "w1 <fetchedAt ns> <expiresAt ns> <token>"
//	base:lease            held by the one instance fetching from WeChat
//	base:fetches:<day>    the cluster's token fetches that (Beijing) day
//	base:forced:<day>     the cluster's stable force_refresh calls that day
//
// Memcache is a helper, never a dependency: when it fails, the account
// fetches locally and a breaker skips memcache for a while, so a dead or
// black-holed server costs one short timeout, not one per request.
type memcacheStore struct {
	*memcacheConn
	base     string
	tokenKey string // the shared value: the token, or a ticket (see slot)
	leaseKey string

	// fetch gets a new value from WeChat; current is what this instance
	// holds now. For the token they are the account's own.
	fetch   func(ctx context.Context, bad string) (*tokenEntry, error)
	current func() *tokenEntry

	// badLogged is set once an undecodable value has been logged, and
	// cleared when a good value is stored again.
	badLogged atomic.Bool
}

// memcacheConn is the client and the breaker, shared by every value an
// account keeps in memcache (its token and its tickets).
type memcacheConn struct {
	a *account
	c *memcache.Client

	// attempts counts memcache operations tried (for tests and debugging).
	attempts atomic.Int64

	mu        sync.Mutex
	tripped   bool      // breaker open (or half open, waiting for a probe)
	openUntil time.Time // no probe before this
	probing   bool      // one caller is probing memcache
}

// slot returns a store for another value of the same account under
// base:<name>, with the same client and breaker: the cluster protocol
// (lease, compare-and-swap, wait) serves JS-SDK tickets as it serves the
// token.
func (s *memcacheStore) slot(name string, fetch func(context.Context, string) (*tokenEntry, error), current func() *tokenEntry) *memcacheStore {
	key := s.base + ":" + name
	return &memcacheStore{memcacheConn: s.memcacheConn, base: key, tokenKey: key, leaseKey: key + ":lease", fetch: fetch, current: current}
}

// Tunables of the memcache store.
const (
	memcacheFormat      = "w1"
	breakerCooloff      = 5 * time.Second
	leaseMargin         = 2 * time.Second
	minLeaseTTL         = 2 // seconds
	leasePollMin        = 25 * time.Millisecond
	leasePollJitter     = 25 * time.Millisecond
	counterTTL          = 48 * 3600 // seconds
	saveAttempts        = 4
	maxMemcacheKey      = 250
	longestKeySuffix    = len(":ticket:wx_card:lease")
	defaultMemcacheIdle = 64
)

// errMemcacheDown marks a flow abandoned because memcache failed; the
// caller fetches locally.
var errMemcacheDown = errors.New("memcache unavailable")

func newMemcacheStore(sc storeConfig, a *account) (sharedStore, error) {
	if len(sc.servers) == 0 {
		return nil, errors.New("memcache: no servers configured")
	}
	ss := new(memcache.ServerList)
	if err := ss.SetServers(sc.servers...); err != nil {
		return nil, fmt.Errorf("memcache servers %v: %v", sc.servers, err)
	}
	c := memcache.NewFromSelector(ss)
	c.Timeout = sc.timeout
	if c.Timeout <= 0 {
		c.Timeout = 100 * time.Millisecond
	}
	c.MaxIdleConns = defaultMemcacheIdle
	base := memcacheKeyBase(sc.prefix, a.key)
	return &memcacheStore{
		memcacheConn: &memcacheConn{a: a, c: c},
		base:         base, tokenKey: base, leaseKey: base + ":lease",
		fetch: a.fetch, current: a.cur.Load,
	}, nil
}

// memcacheKeyBase returns prefix+key if it is a legal memcache key with
// room for the longest suffix, else a hash of it.
func memcacheKeyBase(prefix, key string) string {
	base := prefix + key
	ok := len(base)+longestKeySuffix <= maxMemcacheKey
	for i := 0; ok && i < len(base); i++ {
		if base[i] <= ' ' || base[i] == 0x7f {
			ok = false
		}
	}
	if ok {
		return base
	}
	sum := sha256.Sum256([]byte(base))
	return "wechat:" + hex.EncodeToString(sum[:])
}

// --- value encoding ---

func encodeEntry(e *tokenEntry) []byte {
	return []byte(memcacheFormat + " " + strconv.FormatInt(e.FetchedAt.UnixNano(), 10) + " " +
		strconv.FormatInt(e.ExpiresAt.UnixNano(), 10) + " " + e.Value)
}

// decodeEntry parses a stored value. The error never quotes the value: it
// may hold a token.
func decodeEntry(b []byte) (*tokenEntry, error) {
	parts := strings.SplitN(string(b), " ", 4)
	if len(parts) != 4 {
		return nil, errors.New("not a versioned token value")
	}
	if parts[0] != memcacheFormat {
		return nil, errors.New("unknown value version (want " + memcacheFormat + ")")
	}
	fetched, err1 := strconv.ParseInt(parts[1], 10, 64)
	expires, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return nil, errors.New("bad timestamps")
	}
	if expires <= fetched {
		return nil, errors.New("expiry before fetch time")
	}
	tok := parts[3]
	if tok == "" {
		return nil, errors.New("empty token")
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] <= ' ' || tok[i] == 0x7f {
			return nil, errors.New("token holds spaces or control characters")
		}
	}
	return finishEntry(&tokenEntry{
		Value:     tok,
		FetchedAt: time.Unix(0, fetched),
		ExpiresAt: time.Unix(0, expires),
		Source:    "memcache",
	}), nil
}

// decode turns a stored item into an entry; nil for anything unusable,
// which is logged once.
func (s *memcacheStore) decode(it *memcache.Item) *tokenEntry {
	if it == nil {
		return nil
	}
	e, err := decodeEntry(it.Value)
	if err == nil && !s.a.now().Before(e.ExpiresAt) {
		e, err = nil, errors.New("expired")
	}
	if err != nil {
		if s.badLogged.CompareAndSwap(false, true) {
			s.a.log().Warn("wechat: the token value in memcache is unusable; treating it as a miss and overwriting it",
				zap.String("appid", s.a.appid), zap.String("key", s.tokenKey), zap.String("reason", err.Error()))
		}
		return nil
	}
	return e
}

// usable reports whether a stored entry can be handed out instead of
// fetching: not the rejected token, not near expiry, and when refreshing
// ahead, newer than what the account holds.
func (s *memcacheStore) usable(e *tokenEntry, bad string, ahead bool) bool {
	if e == nil || e.Value == bad || !s.a.now().Before(e.useBy) {
		return false
	}
	if ahead {
		if cur := s.current(); cur != nil && !e.FetchedAt.After(cur.FetchedAt) {
			return false
		}
	}
	return true
}

// ttlSeconds is the memcache expiration for an entry: until it expires.
func (s *memcacheStore) ttlSeconds(e *tokenEntry) int32 {
	left := e.ExpiresAt.Sub(s.a.now())
	if left <= 0 {
		return 0
	}
	return int32((left + time.Second - 1) / time.Second)
}

// leaseTTL outlives the holder's fetch, which account.fetch bounds by the
// fetch deadline, so a live holder never loses its lease; a dead one's
// lease goes away in time for the waiters (see account.loadTimeout) to
// take over.
func (s *memcacheConn) leaseTTL() int32 {
	d := s.a.fetchTimeout() + leaseMargin
	secs := int32((d + time.Second - 1) / time.Second)
	return max(secs, minLeaseTTL)
}

// --- breaker ---

// allow reports whether memcache may be used. While the breaker is open it
// says no; after the cool-off, one caller gets through as the probe.
func (s *memcacheConn) allow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.tripped {
		return true
	}
	if s.probing || s.a.now().Before(s.openUntil) {
		return false
	}
	s.probing = true
	return true
}

func (s *memcacheConn) succeeded() {
	s.mu.Lock()
	was := s.tripped
	s.tripped, s.probing = false, false
	s.mu.Unlock()
	if was {
		s.a.log().Info("wechat: memcache reachable again", zap.String("appid", s.a.appid))
	}
}

// failed records a memcache error: it opens the breaker (or keeps it
// open), drops idle connections, which are dead after an outage, and logs
// once per opening.
func (s *memcacheConn) failed(op string, err error) {
	s.a.metrics.Load().memcacheError(op)
	s.mu.Lock()
	first := !s.tripped
	s.tripped, s.probing = true, false
	s.openUntil = s.a.now().Add(breakerCooloff)
	s.mu.Unlock()
	_ = s.c.Close()
	if first {
		s.a.log().Warn("wechat: memcache failed; fetching tokens locally and skipping memcache for a while",
			zap.String("appid", s.a.appid), zap.String("op", op),
			zap.String("error", memcacheErrText(err)), zap.Duration("retry_in", breakerCooloff))
	}
}

// memcacheErrText describes err without quoting server answers, which may
// hold a stored value.
func memcacheErrText(err error) string {
	var oe *net.OpError
	var cte *memcache.ConnectTimeoutError
	switch {
	case errors.As(err, &oe):
		return oe.Error()
	case errors.As(err, &cte):
		return cte.Error()
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by memcache"
	case errors.Is(err, memcache.ErrNoServers), errors.Is(err, memcache.ErrServerError), errors.Is(err, memcache.ErrMalformedKey):
		return err.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "unexpected answer from memcache"
}

func (s *memcacheConn) breakerOpen(time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tripped
}

// benign reports the errors that are answers, not failures.
func benign(err error) bool {
	return err == nil || errors.Is(err, memcache.ErrCacheMiss) || errors.Is(err, memcache.ErrNotStored) || errors.Is(err, memcache.ErrCASConflict)
}

// done closes the breaker on a benign result, opens it on a failure, and
// reports whether err was a failure.
func (s *memcacheConn) done(op string, err error) bool {
	if benign(err) {
		s.succeeded()
		return false
	}
	s.failed(op, err)
	return true
}
