package credential

import (
	"context"
	"errors"
	"fmt"
	randv2 "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Shared is one account's view of a cluster store: a Backend behind a
// breaker, with sealed values under keys named by the account's Sealer.
// The cluster protocol is written here once for every backend:
//
//	<base>:<slot>            the credential, sealed
//	<base>:<slot>:lease         held by the one instance fetching it (a sealed claim)
//	<base>:<slot>:aux:<n>       a durable auxiliary value, sealed
//	<base>:<slot>:<c>:<day>:<i> daily counters (Beijing day), slot i of counterSlots, sealed
//	<base>:once:<hmac>          a one-time mark (Remember), a sealed claim
//
// with base = prefix + Sealer.KeyName(). The store is a helper, never a
// dependency: on failure the caller fetches locally and the breaker skips
// the store for a cool-off, then lets exactly one probe through.
type Shared struct {
	b    Backend
	seal *Sealer
	base string
	opt  SharedOptions
	brk  breaker
	slot int // this instance's slot of the daily counters

	badLogged atomic.Bool
	ops       atomic.Int64 // backend calls attempted, for tests
	logger    atomic.Pointer[zap.Logger]
	lockWait  time.Duration // a write's extra time to wait for a peer's lock
	// newest is, per key, the fetch time (Unix ns) of the newest token
	// read or written there: a store writer may put back an older sealed
	// token of the account (revoked since), and one older than a token
	// this instance has seen is no better than none. One entry per
	// credential (authorizer) read through the store, about 200 bytes.
	newest sync.Map
}

// SetLogger replaces the logger, e.g. with a reloaded config's.
func (s *Shared) SetLogger(l *zap.Logger) {
	if l != nil {
		s.logger.Store(l)
	}
}

// SharedOptions tunes a Shared.
type SharedOptions struct {
	Prefix    string           // default "wechat:"
	OpTimeout time.Duration    // per backend call; default 100 ms
	Cooloff   time.Duration    // breaker open time; default 5 s
	Now       func() time.Time // default time.Now
	Logger    *zap.Logger
	Observer  Observer
	Durable   bool // the backend keeps data across its restarts
}

// Protocol tunables.
const (
	leaseMargin  = 2 * time.Second
	pollMin      = 25 * time.Millisecond
	pollJitter   = 25 * time.Millisecond
	counterTTL   = 48 * time.Hour
	saveAttempts = 4
)

// errStoreDown marks a flow abandoned because the store failed or its
// breaker is open; the caller goes on locally.
var errStoreDown = errors.New("credential store unavailable")

// NewShared wraps b for one account. The Shared owns b: Close closes it.
func NewShared(b Backend, seal *Sealer, opt SharedOptions) *Shared {
	if opt.Prefix == "" {
		opt.Prefix = "wechat:"
	}
	if opt.OpTimeout <= 0 {
		opt.OpTimeout = 100 * time.Millisecond
	}
	if opt.Cooloff <= 0 {
		opt.Cooloff = 5 * time.Second
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	if opt.Observer == nil {
		opt.Observer = nopObserver{}
	}
	s := &Shared{b: b, seal: seal, base: opt.Prefix + seal.KeyName(), opt: opt, slot: randv2.N(counterSlots)}
	if lw, ok := b.(interface{ LockWait() time.Duration }); ok {
		s.lockWait = max(lw.LockWait(), 0)
	}
	s.logger.Store(opt.Logger)
	return s
}

// Key is the store key of slot.
func (s *Shared) Key(slot string) string { return s.base + ":" + slot }

// Durable reports whether the backend keeps data across restarts.
func (s *Shared) Durable() bool { return s.opt.Durable }

// BreakerOpen reports whether the store is being skipped after errors.
func (s *Shared) BreakerOpen() bool { return s.brk.isOpen() }

// Ops counts backend calls attempted (tests and debugging).
func (s *Shared) Ops() int64 { return s.ops.Load() }

// Close closes the backend.
func (s *Shared) Close() error { return s.b.Close() }

// do runs one backend call under the breaker and a short timeout.
// ErrNotFound is an answer: it closes the breaker like a success.
func (s *Shared) do(ctx context.Context, op string, f func(context.Context) error) error {
	return s.call(ctx, op, false, f)
}

// call is do; with always, the call is made even while the breaker is
// open, for the rare call whose loss costs more than one short timeout.
// Such a call closes the breaker if it succeeds, and leaves it (and its
// one probe) alone if it fails.
func (s *Shared) call(ctx context.Context, op string, always bool, f func(context.Context) error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	bypass := false
	if !s.brk.allow(s.opt.Now()) {
		if !always {
			return errStoreDown
		}
		bypass = true
	}
	s.ops.Add(1)
	timeout := s.opt.OpTimeout
	if op != "get" {
		timeout += s.lockWait // a write may wait for a peer's lock
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	err := f(ctx)
	cancel()
	if errors.Is(err, ErrBusy) {
		// A peer held the lock all that time: contention, not an
		// outage. The breaker is left as it was.
		if !bypass {
			s.brk.unprobe() // if this was the half-open probe, let another go
		}
		return err
	}
	if err == nil || errors.Is(err, ErrNotFound) {
		if s.brk.success() {
			s.logger.Load().Info("credential store reachable again", Event(EventStoreBreaker), zap.String(FieldState, StateClosed), zap.String(FieldOp, op))
		}
		return err
	}
	s.opt.Observer.StoreError(op)
	if !bypass && s.brk.fail(s.opt.Now().Add(s.opt.Cooloff)) {
		// The error text of a backend never quotes a value (Backend
		// contract), and values are sealed anyway.
		s.logger.Load().Warn("credential store failed; going on locally and skipping the store for a while", Event(EventStoreBreaker), zap.String(FieldState, StateOpen),
			zap.String(FieldOp, op), zap.String(FieldError, err.Error()), zap.Duration(FieldRetryIn, s.opt.Cooloff))
	}
	return fmt.Errorf("%w: %s", errStoreDown, op)
}

// breaker: closed, open until a time, then half-open with exactly one
// probe in flight.
type breaker struct {
	mu        sync.Mutex
	open      bool
	openUntil time.Time
	probing   bool
}

func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return true
	}
	if b.probing || now.Before(b.openUntil) {
		return false
	}
	b.probing = true
	return true
}

// success closes the breaker and reports whether it was open.
func (b *breaker) success() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	was := b.open
	b.open, b.probing = false, false
	return was
}

// fail opens the breaker until until and reports whether this opened it.
func (b *breaker) fail(until time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	first := !b.open
	b.open, b.probing, b.openUntil = true, false, until
	return first
}

// unprobe ends a probe that got no verdict (a busy lock).
func (b *breaker) unprobe() {
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

func (b *breaker) isOpen() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.open
}

// read returns the token stored under key (nil on a miss or an unusable
// value), its version, and whether the key held anything.
func (s *Shared) read(ctx context.Context, key string) (t *Token, ver Version, present bool, err error) {
	var v []byte
	err = s.do(ctx, "get", func(ctx context.Context) (err error) {
		v, ver, err = s.b.Get(ctx, key)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, err
	}
	t, oerr := s.seal.OpenToken(key, v, s.opt.Now())
	if oerr == nil && !s.opt.Now().Before(t.ExpiresAt) {
		return nil, ver, true, nil // expired: a miss, nothing to report
	}
	if oerr != nil {
		if s.badLogged.CompareAndSwap(false, true) {
			s.logger.Load().Warn("a stored credential is unusable (foreign, corrupt or expired); treating it as a miss", Event(EventStoreUnusable),
				zap.String(FieldKey, key), zap.String(FieldReason, oerr.Error()))
		}
		return nil, ver, true, nil
	}
	if n, ok := s.newest.Load(key); ok && t.FetchedAt.UnixNano() < n.(int64) {
		return nil, ver, true, nil // put back: older than one already seen
	}
	s.saw(key, t)
	return t, ver, true, nil
}

// saw records t as read or written under key, if it is the newest.
func (s *Shared) saw(key string, t *Token) {
	n := t.FetchedAt.UnixNano()
	for {
		v, ok := s.newest.Load(key)
		switch {
		case !ok:
			if _, loaded := s.newest.LoadOrStore(key, n); !loaded {
				return
			}
		case v.(int64) >= n:
			return
		case s.newest.CompareAndSwap(key, v, n):
			return
		}
	}
}

// want says which stored tokens a flow can use instead of fetching.
type want struct {
	bad       string    // the value just rejected
	notBefore time.Time // when it was: a token fetched earlier is suspect
	ahead     bool      // a refresh: only a token newer than cur will do
	cur       *Token
}

func (w want) ok(t *Token, now time.Time) bool {
	if !t.usable(now) || t.Value == w.bad || t.FetchedAt.Before(w.notBefore) {
		return false
	}
	return !w.ahead || w.cur == nil || t.FetchedAt.After(w.cur.FetchedAt)
}

// obtain returns a usable stored token, else fetches under the cluster
// lease and stores the result, else waits for the lease holder. It waits
// no longer than an honest lease lives (leaseTTL), whatever the store
// holds: then it takes the lease over.
func (s *Shared) obtain(ctx context.Context, slot string, w want, leaseTTL time.Duration, fetch func(context.Context) (*Token, error)) (*Token, error) {
	key := s.Key(slot)
	t, _, _, err := s.read(ctx, key)
	if err != nil {
		return fetch(ctx)
	}
	if w.ok(t, s.opt.Now()) {
		return t, nil
	}
	lkey := key + ":lease"
	bound := s.opt.Now().Add(leaseTTL)
	for {
		lease, won, until, err := s.claim(ctx, lkey, leaseTTL, bound)
		if err != nil {
			return fetch(ctx) // lease unknown: keep requests working
		}
		if won {
			return s.lead(ctx, key, lkey, lease, w, fetch)
		}
		t, err := s.wait(ctx, key, lkey, w, until, bound)
		switch {
		case errors.Is(err, errStoreDown):
			return fetch(ctx)
		case err != nil:
			return nil, fmt.Errorf("waiting for another instance to fetch: %w", err)
		case t != nil:
			return t, nil
		}
		// The lease is gone or over with no usable value: its holder
		// failed or died. Take over.
	}
}

// lead runs under the lease: re-check (a peer may have stored a value
// between our read and our lease), else fetch and store.
func (s *Shared) lead(ctx context.Context, key, lkey string, lease []byte, w want, fetch func(context.Context) (*Token, error)) (*Token, error) {
	defer func() {
		// Release only if still ours, even after ctx ends.
		rctx := context.WithoutCancel(ctx)
		_ = s.do(rctx, "delete", func(ctx context.Context) error { return s.b.DeleteIf(ctx, lkey, lease) })
	}()
	t, _, _, err := s.read(ctx, key)
	if err != nil {
		return fetch(ctx)
	}
	if w.ok(t, s.opt.Now()) {
		return t, nil
	}
	fresh, err := fetch(ctx)
	if err != nil {
		return nil, err
	}
	return s.save(ctx, key, fresh, w.bad), nil
}

// save stores fresh unless a newer usable value is stored, and returns
// the newer of the two: Add on a miss, CompareAndSwap otherwise, so an
// old value never overwrites a new one.
func (s *Shared) save(ctx context.Context, key string, fresh *Token, bad string) *Token {
	ttl := fresh.ExpiresAt.Sub(s.opt.Now())
	if ttl <= 0 {
		return fresh
	}
	sealed := s.seal.SealToken(key, fresh)
	for range saveAttempts {
		old, ver, present, err := s.read(ctx, key)
		if err != nil {
			return fresh
		}
		if old != nil && old.Value != bad && !old.FetchedAt.Before(fresh.FetchedAt) && old.usable(s.opt.Now()) {
			if old.FetchedAt.After(fresh.FetchedAt) {
				return old
			}
			return fresh
		}
		var stored bool
		if !present {
			err = s.do(ctx, "add", func(ctx context.Context) (err error) {
				stored, err = s.b.Add(ctx, key, sealed, ttl)
				return err
			})
		} else {
			err = s.do(ctx, "cas", func(ctx context.Context) (err error) {
				stored, err = s.b.CompareAndSwap(ctx, key, ver, sealed, ttl)
				return err
			})
		}
		if err != nil {
			return fresh
		}
		if stored {
			s.badLogged.Store(false)
			s.saw(key, fresh)
			return fresh
		}
	}
	return fresh
}

// wait polls for the lease holder's value. It returns the value, or nil
// with no error once the lease is gone, replaced, or over (its own
// expiry, or bound).
func (s *Shared) wait(ctx context.Context, key, lkey string, w want, until, bound time.Time) (*Token, error) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Reset(pollMin + randv2.N(pollJitter))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
		}
		t, _, _, err := s.read(ctx, key)
		if err != nil {
			return nil, err
		}
		if w.ok(t, s.opt.Now()) {
			return t, nil
		}
		if !s.opt.Now().Before(until) {
			return nil, nil
		}
		var v []byte
		err = s.do(ctx, "get", func(ctx context.Context) (err error) {
			v, _, err = s.b.Get(ctx, lkey)
			return err
		})
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if until = s.liveClaim(lkey, v, bound); until.IsZero() {
			return nil, nil
		}
	}
}

// peek reads the stored value for the refresher. If the store has none
// (restarted or flushed) and cur is good, it writes cur back so the
// cluster finds it again.
func (s *Shared) peek(ctx context.Context, slot string, cur *Token, bad string) *Token {
	key := s.Key(slot)
	t, _, _, err := s.read(ctx, key)
	if err != nil {
		return nil
	}
	if t == nil && cur.usable(s.opt.Now()) && cur.Value != bad {
		s.save(ctx, key, cur, bad)
	}
	return t
}

// load reads a stored value without fetching (warm start).
func (s *Shared) load(ctx context.Context, slot string) *Token {
	t, _, _, _ := s.read(ctx, s.Key(slot))
	return t
}

// auxGet and auxPut keep a credential's auxiliary values, sealed.
func (s *Shared) auxGet(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := s.do(ctx, "get", func(ctx context.Context) (err error) {
		v, _, err = s.b.Get(ctx, key)
		return err
	})
	if err != nil {
		return nil, err
	}
	p, err := s.seal.Open(key, v)
	if err != nil {
		return nil, ErrNotFound
	}
	return p, nil
}

// auxPut asks the store even while the breaker is open: an auxiliary
// value is a refresh token or a pushed ticket, whose loss costs more than
// one short timeout.
func (s *Shared) auxPut(ctx context.Context, key string, v []byte) error {
	sealed := s.seal.Seal(key, v)
	for range saveAttempts {
		var stored bool
		err := s.call(ctx, "add", true, func(ctx context.Context) (err error) {
			stored, err = s.b.Add(ctx, key, sealed, 0)
			return err
		})
		if err != nil || stored {
			return err
		}
		var ver Version
		err = s.call(ctx, "get", true, func(ctx context.Context) (err error) {
			_, ver, err = s.b.Get(ctx, key)
			return err
		})
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		err = s.call(ctx, "cas", true, func(ctx context.Context) (err error) {
			stored, err = s.b.CompareAndSwap(ctx, key, ver, sealed, 0)
			return err
		})
		if err != nil || stored {
			return err
		}
	}
	return errors.New("credential store: auxiliary value kept changing")
}

// Store writes t under slot with the newer-wins rule and returns what the
// store holds afterwards (t, or a newer value). For imports and tests.
func (s *Shared) Store(ctx context.Context, slot string, t *Token) *Token {
	return s.save(ctx, s.Key(slot), t, "")
}

// Load reads the usable value under slot, or nil.
func (s *Shared) Load(ctx context.Context, slot string) *Token { return s.load(ctx, slot) }

// Remember marks name as seen across the cluster for ttl and reports
// whether this call made the mark (first) or another instance had
// already. The key is an HMAC of name, the value a sealed claim carrying
// its own expiry: the store learns nothing about name, and a mark this
// account did not write (planted, or put back after it expired) is no
// mark. The claim is returned whenever the store was asked, even on an
// error (a timed-out Add may have landed), so that Forget can undo it; it
// is "" when the store was not asked (breaker open).
func (s *Shared) Remember(ctx context.Context, name string, ttl time.Duration) (claim string, first bool, err error) {
	mine, first, _, err := s.claim(ctx, s.onceKey(name), ttl, time.Time{})
	if err != errStoreDown { // the store was asked
		claim = string(mine)
	}
	return claim, first && err == nil, err
}

// Forget removes the mark Remember made for name, if it still holds
// claim: never a mark another instance made. It asks the store even
// while the breaker is open, because it runs just after a failure (the
// push could not be stored) and a mark left behind would refuse
// WeChat's retry of the push until the mark expires.
func (s *Shared) Forget(ctx context.Context, name, claim string) error {
	if claim == "" {
		return nil
	}
	key := s.onceKey(name)
	return s.call(ctx, "delete", true, func(ctx context.Context) error { return s.b.DeleteIf(ctx, key, []byte(claim)) })
}

func (s *Shared) onceKey(name string) string { return s.base + ":once:" + s.seal.Name("once", name) }
