package wechat

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// tokenEntry is one access_token as the gateway holds it. Entries are
// immutable once published, so the hot path can read them through an atomic
// pointer with no lock and no allocation.
type tokenEntry struct {
	Value     string    // the token itself: never logged, never in metrics
	FetchedAt time.Time // when WeChat issued it to us (or to a peer)
	ExpiresAt time.Time // FetchedAt + expires_in
	Source    string    // "fetch" or "memcache"

	escaped string    // url.QueryEscape(Value), computed once
	useBy   time.Time // after this, requests stop using it and fetch anew
}

// safetyMargin keeps a token from being used in its last moments, so a
// request that leaves just before expiry does not arrive just after it.
const safetyMargin = 30 * time.Second

// maxTokenTTL clamps absurd expires_in values: WeChat documents 7200 s, and
// trusting a huge value would pin a dead token forever.
const maxTokenTTL = 7200 * time.Second

// fallbackTTL is used when expires_in is missing or not positive: the token
// works now, but we have no promise for how long, so look again soon.
const fallbackTTL = 5 * time.Minute

func newEntry(value string, expiresIn int64, fetchedAt time.Time, source string) *tokenEntry {
	var ttl time.Duration
	switch {
	case expiresIn <= 0:
		ttl = fallbackTTL
	case expiresIn >= int64(maxTokenTTL/time.Second):
		ttl = maxTokenTTL // clamp before multiplying: a huge value would overflow
	default:
		ttl = time.Duration(expiresIn) * time.Second
	}
	return finishEntry(&tokenEntry{Value: value, FetchedAt: fetchedAt, ExpiresAt: fetchedAt.Add(ttl), Source: source})
}

// finishEntry fills the derived fields of an entry.
func finishEntry(e *tokenEntry) *tokenEntry {
	e.escaped = url.QueryEscape(e.Value)
	margin := safetyMargin
	if ttl := e.ExpiresAt.Sub(e.FetchedAt); ttl < 4*margin {
		margin = ttl / 4
	}
	e.useBy = e.ExpiresAt.Add(-margin)
	return e
}

// account holds the token of one WeChat account (appid + secret + token
// API). It lives in a caddy.UsagePool, so config reloads that keep the
// account keep its token, its backoff state and its refresher.
type account struct {
	key   string // pool key and shared-store key: a hash, never the secret
	appid string
	api   string // tokenAPIStable or tokenAPIClassic
	now   func() time.Time

	fetcher atomic.Pointer[fetcher] // replaced on reload: the newest config's transport
	logger  atomic.Pointer[zap.Logger]
	store   sharedStore // nil: in-process only
	metrics atomic.Pointer[metrics]

	cur atomic.Pointer[tokenEntry]
	sf  singleflight.Group

	timeout atomic.Int64 // fetch deadline in ns; set by every provision, read by the refresher

	mu        sync.Mutex
	lastBad   string    // last token WeChat rejected; a fetch returning it is stale
	lastForce time.Time // last stable force_refresh, limited to one per 30 s
	failures  int       // consecutive failed fetches
	retryAt   time.Time // no fetch before this while failing
	lastErr   error
	status    accountStatus

	refresher *refresher
	bindings  []*binding // one per provisioned config using the account, oldest first
}

// binding is what one provisioned config lends the account: its HTTP
// transport and upstreams, logger and metrics. The newest live one is used,
// so a reload switches to the new config, and a reload that fails (new
// config provisioned, then cleaned up) falls back to the running one.
type binding struct {
	f      *fetcher
	logger *zap.Logger
	m      *metrics
}

func (a *account) attach(b *binding) {
	a.mu.Lock()
	a.bindings = append(a.bindings, b)
	a.mu.Unlock()
	a.use(b)
}

func (a *account) detach(b *binding) {
	a.mu.Lock()
	for i, x := range a.bindings {
		if x == b {
			a.bindings = append(a.bindings[:i], a.bindings[i+1:]...)
			break
		}
	}
	var last *binding
	if n := len(a.bindings); n > 0 {
		last = a.bindings[n-1]
	}
	a.mu.Unlock()
	if last != nil {
		a.use(last)
	}
}

func (a *account) use(b *binding) {
	a.fetcher.Store(b.f)
	a.logger.Store(b.logger)
	a.metrics.Store(b.m)
}

// errTokenRejected is returned when WeChat keeps handing back a token it
// just rejected and force_refresh is not allowed yet.
var errTokenRejected = errors.New("WeChat returned the access_token it had just rejected")

// forceInterval is WeChat's minimum spacing of stable force_refresh calls.
const forceInterval = 30 * time.Second

func (a *account) log() *zap.Logger {
	if l := a.logger.Load(); l != nil {
		return l
	}
	return zap.NewNop()
}

// Token returns a usable token. The fast path is one atomic load and a time
// comparison; only a cold, expired or invalidated cache takes the slow path.
func (a *account) Token(ctx context.Context) (*tokenEntry, error) {
	if e := a.cur.Load(); e != nil && a.now().Before(e.useBy) {
		return e, nil
	}
	return a.slowToken(ctx)
}

// slowToken waits for the one fetch in flight. The fetch runs detached from
// ctx with its own deadline, so a client that hangs up does not cancel the
// fetch other requests are waiting on.
func (a *account) slowToken(ctx context.Context) (*tokenEntry, error) {
	ch := a.sf.DoChan("token", func() (any, error) { return a.load(false) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*tokenEntry), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Invalidate drops e only if it is still the cached token (compare and
// invalidate): a request that saw an old token fail must not throw away the
// new one another request has just fetched.
func (a *account) Invalidate(e *tokenEntry) bool {
	if a.cur.Load() != e {
		return false
	}
	// Mark it bad before dropping it, so a fetch that starts the moment
	// it is gone already knows not to accept it back.
	a.mu.Lock()
	a.lastBad = e.Value
	a.mu.Unlock()
	return a.cur.CompareAndSwap(e, nil)
}

// load obtains a fresh token: from the shared store if a peer already has a
// good one, else from WeChat. ahead marks a background refresh, which may
// replace a token that still works.
func (a *account) load(ahead bool) (any, error) {
	if e := a.cur.Load(); !ahead && e != nil && a.now().Before(e.useBy) {
		return e, nil // a flight that finished just before ours
	}
	if err := a.backoffErr(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.loadTimeout())
	defer cancel()
	e, err := a.obtain(ctx, ahead)
	if err != nil {
		a.failed(err)
		return nil, err
	}
	a.publish(e)
	return e, nil
}

// publish makes e the token that requests use, unless a newer one is
// already there: an old token never overwrites a new one.
func (a *account) publish(e *tokenEntry) {
	for {
		old := a.cur.Load()
		if old != nil && old.FetchedAt.After(e.FetchedAt) && old.Value != a.badToken() {
			return
		}
		if a.cur.CompareAndSwap(old, e) {
			break
		}
	}
	a.mu.Lock()
	a.failures, a.retryAt, a.lastErr = 0, time.Time{}, nil
	a.status.setToken(e)
	a.mu.Unlock()
	a.refresher.schedule(e)
}

func (a *account) badToken() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastBad
}

// obtain asks the shared store first, then WeChat under the cluster lease.
func (a *account) obtain(ctx context.Context, ahead bool) (*tokenEntry, error) {
	bad := a.badToken()
	if a.store == nil {
		return a.fetch(ctx, bad)
	}
	return a.store.obtain(ctx, bad, ahead)
}

// fetch calls the token endpoint. With stable tokens a normal fetch comes
// first; force_refresh is used only when WeChat hands back the very token
// that just failed, and at most once per 30 s.
func (a *account) fetch(ctx context.Context, bad string) (*tokenEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, a.fetchTimeout())
	defer cancel()
	f := a.fetcher.Load()
	e, err := f.fetch(ctx, false)
	a.countFetch(f.api, false, err)
	if err != nil {
		return nil, err
	}
	if bad == "" || e.Value != bad {
		a.logFetch(e, false)
		return e, nil
	}
	if f.api != tokenAPIStable {
		return nil, errTokenRejected
	}
	a.mu.Lock()
	wait := forceInterval - a.now().Sub(a.lastForce)
	allowed := wait <= 0 && a.status.forceAllowed()
	if allowed {
		a.lastForce = a.now()
	}
	a.mu.Unlock()
	if !allowed {
		if wait < 0 {
			wait = 0
		}
		return nil, fmt.Errorf("%w; force_refresh not allowed for %s (30 s spacing, 20/day)", errTokenRejected, wait.Round(time.Second))
	}
	e, err = f.fetch(ctx, true)
	a.countFetch(f.api, true, err)
	if err != nil {
		return nil, err
	}
	a.logFetch(e, true)
	return e, nil
}

func (a *account) logFetch(e *tokenEntry, force bool) {
	a.log().Info("access_token fetched",
		zap.String("appid", a.appid),
		zap.String("token_api", a.api),
		zap.Bool("force_refresh", force),
		zap.Int64("expires_in", int64(e.ExpiresAt.Sub(e.FetchedAt)/time.Second)),
	)
}

// Backoff between failed fetches: 5 s, 10 s, 20 s ... capped at 5 min, so a
// failing endpoint sees at most four attempts in its first minute.
const (
	backoffBase = 5 * time.Second
	backoffMax  = 5 * time.Minute
)

func (a *account) failed(err error) {
	a.mu.Lock()
	a.failures++
	d := backoffBase << min(a.failures-1, 6)
	if d > backoffMax {
		d = backoffMax
	}
	a.retryAt = a.now().Add(d)
	a.lastErr = err
	a.status.setError(err, a.now())
	a.mu.Unlock()
	fields := []zap.Field{zap.String("appid", a.appid), zap.Duration("retry_in", d), zap.String("error", err.Error())}
	var we *wechatError
	if errors.As(err, &we) {
		fields = append(fields, zap.Int("errcode", we.Code), zap.String("errmsg", we.Msg))
	}
	a.log().Error("access_token fetch failed", fields...)
}

// backoffError tells a caller that fetching is paused after failures; it
// carries the last failure so the client sees WeChat's errcode.
type backoffError struct {
	err     error
	retryIn time.Duration
}

func (e *backoffError) Error() string {
	return fmt.Sprintf("%v (next attempt in %s)", e.err, e.retryIn.Round(time.Second))
}
func (e *backoffError) Unwrap() error { return e.err }

func (a *account) backoffErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lastErr == nil {
		return nil
	}
	if wait := a.retryAt.Sub(a.now()); wait > 0 {
		return &backoffError{err: a.lastErr, retryIn: wait}
	}
	return nil
}

// Destruct is called by the usage pool when the last config using this
// account is unloaded.
func (a *account) Destruct() error {
	a.refresher.stop()
	if a.store != nil {
		a.store.close()
	}
	return nil
}

// newAccount builds the long-lived state of one account.
func newAccount(key, appid, api string, sc storeConfig) (*account, error) {
	a := &account{key: key, appid: appid, api: api, now: time.Now}
	a.setFetchTimeout(defaultFetchTimeout)
	if len(sc.servers) > 0 {
		s, err := newMemcacheStore(sc, a)
		if err != nil {
			return nil, err
		}
		a.store = s
	}
	a.refresher = newRefresher(a)
	return a, nil
}

// redact removes the account's secret from s.
func (a *account) redact(s string) string {
	if f := a.fetcher.Load(); f != nil {
		return f.redactString(s)
	}
	return s
}

func (a *account) fetchTimeout() time.Duration     { return time.Duration(a.timeout.Load()) }
func (a *account) setFetchTimeout(d time.Duration) { a.timeout.Store(int64(d)) }

// loadTimeout bounds one load. With a shared store it outlasts a peer's
// lease (fetch deadline + 2 s), so that when the lease holder dies the
// waiters take over instead of failing and backing off.
func (a *account) loadTimeout() time.Duration {
	if a.store == nil {
		return a.fetchTimeout()
	}
	return 2*a.fetchTimeout() + 3*time.Second
}
