package credential

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Observer is how the Caddy layer sees a Cache: metrics hooks. Methods
// are called synchronously and must be cheap. They never get a token.
type Observer interface {
	Fetched(name string, force bool, err error)
	StoreError(op string)
	CeilingReached(name string)
}

type nopObserver struct{}

func (nopObserver) Fetched(string, bool, error) {}
func (nopObserver) StoreError(string)           {}
func (nopObserver) CeilingReached(string)       {}

// Window is how long before expiry refresh-ahead renews, picked at random
// in [Min, Max] for each token so a cluster's renewals spread out.
type Window struct{ Min, Max time.Duration }

// Renewal windows. Stable renews inside WeChat's last-5-minutes window,
// where a normal fetch returns the next token; classic (and tickets) about
// 10 minutes early, inside the 5 minutes the old token keeps working.
var (
	StableWindow  = Window{time.Minute, 4*time.Minute + 30*time.Second}
	ClassicWindow = Window{9 * time.Minute, 11 * time.Minute}
)

// Defaults of a Config.
const (
	DefaultFetchTimeout = 10 * time.Second
	DefaultMinAge       = 60 * time.Second
	DefaultProbeTTL     = 30 * time.Second
	probeSpacing        = time.Second      // at most one probe a second per token
	unknownBackoffMax   = 30 * time.Second // probes answered with no verdict space out to this
	pathVerdicts        = 4                // "valid" verdicts kept per token, one per API path
	DefaultCeiling      = 200
	forceSpacing        = 30 * time.Second
	forceQuota          = 20
	recentMax           = 4
	backoffBase         = 5 * time.Second
	backoffMax          = 5 * time.Minute
	peekInterval        = time.Minute
)

// Config configures a Cache. Zero values take the defaults.
type Config struct {
	Name         string  // slot in the store and name in logs: "access_token", "ticket:jsapi"
	AppID        string  // for logs only
	Source       Source  // may be replaced later with SetSource
	Shared       *Shared // nil: this process only
	Scheduler    *Scheduler
	Window       Window        // zero: StableWindow
	FetchTimeout time.Duration // deadline of one fetch, detached from callers
	MinAge       time.Duration // younger tokens are not invalidated by request evidence; <0: none
	ProbeTTL     time.Duration // how long a "valid" verdict answers the API path it was taken for, and a vouch holds
	Ceiling      int           // fetches per account per Beijing day; 0: DefaultCeiling; <0: none
	Now          func() time.Time
	Rand         func() float64 // [0,1), for jitter
	// PeekInterval is how often, with a store, the refresher looks for a
	// peer's newer token. 0: once a minute; <0: never (thousands of
	// authorizer caches find a peer's token on their renewal or a
	// rejection instead, without a store read per cache per minute).
	PeekInterval time.Duration
	// Spread moves the first renewal of the cache's first token, when it
	// was fetched (not a peer's), to a random point of its life, so caches
	// filled in one burst (ten thousand authorizers on a cold start)
	// renew spread out, not together.
	Spread   bool
	Logger   *zap.Logger
	Observer Observer
	// Sleep waits d or until ctx ends: how a probe waits for its slot
	// (one a second per token). nil: a timer. Tests on a fake clock
	// advance the clock instead.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Cache holds one credential: the ReuseTokenSource of this package, with
// a cluster protocol, backoff and refresh-ahead.
type Cache struct {
	cfg    Config
	logger atomic.Pointer[zap.Logger]
	cur    atomic.Pointer[Token]
	src    atomic.Pointer[sourceBox]
	sf     singleflight.Group
	probes singleflight.Group
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	lastBad   string
	lastBadAt time.Time // when lastBad was dropped: stored tokens fetched before it are suspect
	failures  int
	retryAt   time.Time
	lastErr   error
	lastErrAt time.Time
	lastForce time.Time
	// held is a token that rejection evidence just led to (a replacement
	// fetched for a rejected token, or a rejected token the endpoint
	// handed back) and that has answered no call since: while held, its
	// failures are a WeChat-wide glitch, not news. The first success
	// (Confirm) ends the hold; heldFlag lets Confirm skip the lock.
	held      heldToken
	heldFlag  atomic.Bool
	ev        *evidence // about the current token only; nil until a first probe
	day       string
	fetches   int64 // today's, the cluster's when counted through the store
	forced    int64
	ceilLog   string // day the ceiling was last logged
	recent    [recentMax]string
	nrecent   int
	badProbes map[string]probeRecord
	aux       []auxEntry // without a store; one or two names, so a slice, not a map
	renewAt   time.Time
	spread    bool // the Spread renewal was placed
	job       *job // guarded by the scheduler's mutex
}

type sourceBox struct{ s Source }

type heldToken struct {
	value string
	until time.Time
}

// evidence is what probes said about one token. A "valid" verdict is
// evidence about the moment it was taken and about the API path whose
// 40001 asked for it: it answers that path's next 40001s for ProbeTTL,
// and nothing else. Another path's 40001 is probed again, at most once a
// second per token.
type evidence struct {
	token     string
	lastProbe time.Time // when the last probe of token started
	unknowns  int       // probes in a row that gave no verdict
	quietTill time.Time // after those, no probe before this
	valid     [pathVerdicts]pathVerdict
}

type pathVerdict struct {
	path  uint64 // hash of the API path; a caller's string is not kept
	until time.Time
}

type probeRecord struct {
	first, last time.Time
	n           int
}

// beijing is where WeChat's daily quotas reset.
var beijing = time.FixedZone("UTC+8", 8*3600)

// New builds a Cache. It fetches nothing until asked (or Warm).
func New(cfg Config) *Cache {
	if cfg.Name == "" {
		cfg.Name = "access_token"
	}
	if cfg.Window == (Window{}) {
		cfg.Window = StableWindow
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.MinAge == 0 {
		cfg.MinAge = DefaultMinAge
	}
	if cfg.ProbeTTL <= 0 {
		cfg.ProbeTTL = DefaultProbeTTL
	}
	if cfg.Ceiling == 0 {
		cfg.Ceiling = DefaultCeiling
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	c := &Cache{cfg: cfg} // maps are made on first use: thousands of caches stay small
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.src.Store(&sourceBox{cfg.Source})
	c.logger.Store(cfg.Logger)
	return c
}

// SetLogger replaces the logger, e.g. with a reloaded config's.
func (c *Cache) SetLogger(l *zap.Logger) {
	if l != nil {
		c.logger.Store(l)
	}
}

func (c *Cache) log() *zap.Logger { return c.logger.Load() }

// FetchTimeout is the deadline of one fetch.
func (c *Cache) FetchTimeout() time.Duration { return c.cfg.FetchTimeout }

// SetSource replaces the source, e.g. on a config reload that keeps the
// account: the token survives, the next fetch uses the new transport.
func (c *Cache) SetSource(s Source) { c.src.Store(&sourceBox{s}) }

func (c *Cache) source() Source { return c.src.Load().s }

// Name is the cache's name.
func (c *Cache) Name() string { return c.cfg.Name }

// Current is the token held now, usable or not; nil if none.
func (c *Cache) Current() *Token { return c.cur.Load() }

// Token returns a usable token. The fast path is one atomic load and a
// time comparison, with no allocation; only a cold, expired or
// invalidated cache waits for the one fetch in flight.
func (c *Cache) Token(ctx context.Context) (*Token, error) {
	if t := c.cur.Load(); t != nil && c.cfg.Now().Before(t.useBy) {
		return t, nil
	}
	return c.slow(ctx)
}

// slow waits for the shared load, which runs detached from ctx under the
// cache's own context, so a client that hangs up cancels nothing.
func (c *Cache) slow(ctx context.Context) (*Token, error) {
	ch := c.sf.DoChan("t", func() (any, error) { return c.load(false) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Token), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Invalidate drops t only if it is still the cached token (compare and
// invalidate): a request that saw an old token fail must not throw away
// the new one another request has just fetched.
func (c *Cache) Invalidate(t *Token) bool {
	cur := c.cur.Load()
	if cur == nil || t == nil || cur.Value != t.Value {
		return false
	}
	c.mu.Lock()
	c.lastBad, c.lastBadAt = cur.Value, c.cfg.Now() // before dropping it: a fetch starting now knows
	c.mu.Unlock()
	return c.cur.CompareAndSwap(cur, nil)
}

// Rejected is RejectedOn for a caller that names no API path.
func (c *Cache) Rejected(ctx context.Context, t *Token) (fresh *Token, replay bool, err error) {
	return c.RejectedOn(ctx, t, "")
}

// RejectedOn is what a request calls when WeChat answered a token errcode
// to a call of the API path api made with t. It returns the token to
// replay with, and whether to replay at all. See the package doc: one
// caller's evidence never takes the account down, and no evidence is a
// licence to ignore the next.
func (c *Cache) RejectedOn(ctx context.Context, t *Token, api string) (fresh *Token, replay bool, err error) {
	now := c.cfg.Now()
	cur := c.cur.Load()
	if cur.usable(now) && cur.Value != t.Value {
		return cur, true, nil // already replaced
	}
	if !cur.usable(now) {
		fresh, err := c.Token(ctx)
		if err != nil {
			return nil, false, err
		}
		return fresh, fresh.Value != t.Value, nil
	}
	if c.holding(cur.Value, now) {
		return cur, false, nil // a glitch: it has answered nothing since the evidence that brought it
	}
	valid, known := c.probe(ctx, cur, api)
	if valid || !known {
		return cur, false, nil // WeChat's answer was not about our token, or we cannot tell
	}
	if c.Invalidate(cur) {
		c.log().Info("a request's evidence and a probe say the credential is invalid; replacing it", Event(EventRejection),
			zap.String(FieldAppID, c.cfg.AppID), zap.String(FieldCredential, c.cfg.Name))
	}
	fresh, err = c.Token(ctx)
	if err != nil {
		return nil, false, err
	}
	// Held only if fetched after this evidence: a token a peer stored
	// before it (adopted through the store) may have been killed by the
	// same revocation, and holding it would keep a dead token for
	// min_token_age. Not held, its next failure is probed (at most once a
	// second) like any other token's.
	if fresh.Value != t.Value && c.cfg.MinAge > 0 && !fresh.FetchedAt.Before(now) {
		c.hold(fresh.Value, fresh.FetchedAt.Add(c.cfg.MinAge))
	}
	return fresh, fresh.Value != t.Value, nil
}

// Confirm records that t has answered a call: fresh evidence that it
// works. A token held after rejection evidence (a replacement, or one the
// endpoint vouched for) that fails before answering anything is the
// casualty of a WeChat-wide glitch, and is kept; once it has answered, a
// failure is a revocation (another system's force_refresh, a secret
// reset), probed and repaired at once. The request path calls it after
// every answer that is not a token errcode; with nothing held it is one
// atomic load.
func (c *Cache) Confirm(t *Token) {
	if t == nil || !c.heldFlag.Load() {
		return
	}
	now := c.cfg.Now()
	c.mu.Lock()
	if c.held.value == t.Value || !now.Before(c.held.until) {
		c.held = heldToken{}
		c.heldFlag.Store(false)
	}
	c.mu.Unlock()
}

// hold marks v as brought by rejection evidence, until until or Confirm.
func (c *Cache) hold(v string, until time.Time) {
	c.mu.Lock()
	c.held = heldToken{v, until}
	c.heldFlag.Store(true)
	c.mu.Unlock()
}

// holding reports whether v is held at now.
func (c *Cache) holding(v string, now time.Time) bool {
	if !c.heldFlag.Load() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held.value == v && now.Before(c.held.until)
}

// evidenceOf is the evidence about the token v, started afresh when it
// was about another one (allocated on a cache's first probe: ten
// thousand authorizers that never see a 40001 pay nothing for it).
// Callers hold c.mu.
func (c *Cache) evidenceOf(v string) *evidence {
	if c.ev == nil {
		c.ev = &evidence{token: v}
	} else if c.ev.token != v {
		*c.ev = evidence{token: v}
	}
	return c.ev
}

// pathKey is the hash an API path's verdict is kept under.
var pathSeed = maphash.MakeSeed()

func pathKey(api string) uint64 { return maphash.String(pathSeed, api) }

// probeResult is one probe's verdict and when it was taken.
type probeResult struct {
	valid bool
	at    time.Time
	path  uint64 // the API path whose 40001 started the probe
}

// probe asks the source whether t is valid, for a 40001 of the API path
// api. A "valid" verdict taken for api within ProbeTTL answers at once;
// anything else waits for a probe, single-flighted per token and at most
// one a second per token (a caller meeting the spacing waits for the next
// slot instead of reusing an older verdict: it may predate a revocation).
// A probe that gives no verdict (a network error, an errcode that is not
// about the token: -1 busy, 45009 quota) keeps t and spaces further
// probes out, 1 s doubling to 30 s. A source without a Prober counts the
// request's evidence as a verdict of "invalid".
func (c *Cache) probe(ctx context.Context, t *Token, api string) (valid, known bool) {
	p, ok := c.source().(Prober)
	if !ok {
		return false, true
	}
	key := pathKey(api)
	now := c.cfg.Now()
	c.mu.Lock()
	ev := c.evidenceOf(t.Value)
	for _, v := range ev.valid {
		if v.path == key && now.Before(v.until) {
			c.mu.Unlock()
			return true, true
		}
	}
	if now.Before(ev.quietTill) {
		c.mu.Unlock()
		return false, false
	}
	// Joined under c.mu: a probe records its verdict under c.mu before its
	// flight ends, so a caller that found no verdict here either joins that
	// flight or starts one after the verdict is kept, never a second probe
	// of a path just found valid.
	ch := c.probes.DoChan(t.Value, func() (any, error) { return c.runProbe(p, t, key) })
	c.mu.Unlock()
	var r singleflight.Result
	select {
	case r = <-ch:
	case <-ctx.Done():
		return false, false
	}
	if r.Err != nil {
		return false, false
	}
	pr := r.Val.(probeResult)
	if pr.valid && pr.path != key {
		c.noteValid(t.Value, key, pr.at) // a caller of another path that joined the probe
	}
	return pr.valid, true
}

// noteValid keeps a "valid" verdict taken at at for the API path key,
// replacing that path's older one or else the one that ends first.
func (c *Cache) noteValid(v string, key uint64, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.noteValidLocked(v, key, at)
}

func (c *Cache) noteValidLocked(v string, key uint64, at time.Time) {
	if c.ev == nil || c.ev.token != v {
		return
	}
	slot := 0
	for i, pv := range c.ev.valid {
		if pv.path == key {
			slot = i
			break
		}
		if pv.until.Before(c.ev.valid[slot].until) {
			slot = i
		}
	}
	c.ev.valid[slot] = pathVerdict{key, at.Add(c.cfg.ProbeTTL)}
}

// runProbe is one probe of t, run once for all the callers that joined
// it, after waiting for the token's next probe slot. A "valid" verdict is
// kept for key, the path that started it, before the flight ends, so a
// caller of that path arriving just after sees it and probes nothing.
func (c *Cache) runProbe(p Prober, t *Token, key uint64) (any, error) {
	c.mu.Lock()
	var wait time.Duration
	if c.ev != nil && c.ev.token == t.Value && !c.ev.lastProbe.IsZero() {
		wait = c.ev.lastProbe.Add(probeSpacing).Sub(c.cfg.Now())
	}
	c.mu.Unlock()
	if wait > 0 {
		if err := c.sleep(c.ctx, wait); err != nil {
			return nil, err
		}
	}
	start := c.cfg.Now()
	c.mu.Lock()
	c.evidenceOf(t.Value).lastProbe = start
	c.mu.Unlock()
	pctx, cancel := context.WithTimeout(c.ctx, c.cfg.FetchTimeout)
	defer cancel()
	valid, err := p.Probe(pctx, t)
	now := c.cfg.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		quiet := probeSpacing
		if c.ev != nil && c.ev.token == t.Value {
			c.ev.unknowns++
			quiet = min(probeSpacing<<min(c.ev.unknowns-1, 5), unknownBackoffMax)
			c.ev.quietTill = now.Add(quiet)
		}
		c.log().Warn("probing a rejected credential gave no verdict; keeping it", Event(EventProbe), zap.String(FieldVerdict, VerdictError),
			zap.String(FieldAppID, c.cfg.AppID), zap.String(FieldCredential, c.cfg.Name),
			zap.Duration(FieldRetryIn, quiet), zap.String(FieldError, err.Error()))
		return nil, err
	}
	if c.ev != nil && c.ev.token == t.Value {
		c.ev.unknowns, c.ev.quietTill = 0, time.Time{}
	}
	c.log().Info("probed a rejected credential", Event(EventProbe), zap.String(FieldVerdict, verdictName(valid)),
		zap.String(FieldAppID, c.cfg.AppID), zap.String(FieldCredential, c.cfg.Name))
	if !valid {
		r := c.badProbes[t.Value]
		if r.n == 0 {
			clear(c.badProbes) // only the latest rejected token matters
			r.first = start
		}
		r.n++
		r.last = start
		if c.badProbes == nil {
			c.badProbes = map[string]probeRecord{}
		}
		c.badProbes[t.Value] = r
	} else {
		c.noteValidLocked(t.Value, key, start)
	}
	return probeResult{valid, start, key}, nil
}

func (c *Cache) sleep(ctx context.Context, d time.Duration) error {
	if c.cfg.Sleep != nil {
		return c.cfg.Sleep(ctx, d)
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// load obtains a token and publishes it. ahead marks a refresh, which
// may replace a token that still works.
func (c *Cache) load(ahead bool) (any, error) {
	if t := c.cur.Load(); !ahead && t.usable(c.cfg.Now()) {
		return t, nil // a flight that finished just before ours
	}
	if err := c.backoffErr(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.loadTimeout())
	defer cancel()
	t, err := c.obtain(ctx, ahead)
	if err != nil {
		if c.ctx.Err() != nil {
			return nil, fmt.Errorf("credential cache closed: %w", c.ctx.Err())
		}
		c.failed(err)
		return nil, err
	}
	c.publish(t)
	if ahead {
		c.log().Info(c.cfg.Name+" renewed ahead of expiry", Event(EventRenewal), zap.String(FieldAppID, c.cfg.AppID),
			zap.String(FieldCredential, c.cfg.Name), zap.String(FieldSource, t.Source), zap.Int64(FieldExpiresIn, int64(t.ExpiresAt.Sub(t.FetchedAt)/time.Second)))
	}
	return t, nil
}

func (c *Cache) loadTimeout() time.Duration {
	if c.cfg.Shared == nil {
		return c.cfg.FetchTimeout
	}
	// Outlast a peer's lease, so waiters take over from a dead holder
	// instead of failing.
	return 2*c.cfg.FetchTimeout + 3*time.Second
}

func (c *Cache) obtain(ctx context.Context, ahead bool) (*Token, error) {
	c.mu.Lock()
	bad, badAt := c.lastBad, c.lastBadAt
	c.mu.Unlock()
	if c.cfg.Shared == nil {
		return c.fetch(ctx, bad)
	}
	w := want{bad: bad, ahead: ahead, cur: c.cur.Load()}
	if bad != "" {
		// A peer's token fetched before our token was found bad may have
		// died in the same revocation (a secret reset, another system's
		// force_refresh): adopted, it would fail our replay. Fetch
		// instead; a peer's token fetched since is taken.
		w.notBefore = badAt
	}
	return c.cfg.Shared.obtain(ctx, c.cfg.Name, w, c.cfg.FetchTimeout+leaseMargin, func(ctx context.Context) (*Token, error) {
		return c.fetch(ctx, bad)
	})
}

// fetch calls the source under the daily ceiling. When the endpoint hands
// back the token just rejected, the endpoint vouches for it and it is
// accepted; force_refresh is used only on repeated evidence (two failed
// probes of that token 30 s apart), within WeChat's limits.
func (c *Cache) fetch(ctx context.Context, bad string) (*Token, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.FetchTimeout)
	defer cancel()
	if err := c.spend(ctx, false); err != nil {
		return nil, err
	}
	src := c.source()
	opt := FetchOptions{Aux: auxView{c}}
	t, err := src.Fetch(ctx, opt)
	c.cfg.Observer.Fetched(c.cfg.Name, false, err)
	if err != nil {
		return nil, err
	}
	if bad == "" || t.Value != bad {
		c.logFetch(t, false)
		return t, nil
	}
	if f, ok := src.(Forcer); ok && f.CanForce() && c.forceDue(ctx, bad) {
		opt.Force = true
		ft, ferr := src.Fetch(ctx, opt)
		c.cfg.Observer.Fetched(c.cfg.Name, true, ferr)
		if ferr == nil {
			c.logFetch(ft, true)
			return ft, nil
		}
		c.log().Warn("force_refresh failed; keeping the token the endpoint vouches for", Event(EventForceRefreshFailed),
			zap.String(FieldAppID, c.cfg.AppID), zap.String(FieldCredential, c.cfg.Name), zap.String(FieldError, ferr.Error()))
	}
	// The endpoint vouches for bad now: held, like a replacement, until it
	// answers a call or ProbeTTL passes. A revocation after it has answered
	// is probed and repaired at once.
	c.hold(bad, c.cfg.Now().Add(c.cfg.ProbeTTL))
	c.log().Info("the token endpoint returned the token a request had rejected; keeping it", Event(EventVouched),
		zap.String(FieldAppID, c.cfg.AppID), zap.String(FieldCredential, c.cfg.Name))
	return t, nil
}

// forceDue reports, and reserves, a force_refresh: only after two failed
// probes of bad at least 30 s apart, 30 s after the last one, within 20 a
// day (the cluster's count with a store).
func (c *Cache) forceDue(ctx context.Context, bad string) bool {
	now := c.cfg.Now()
	c.mu.Lock()
	r := c.badProbes[bad]
	ok := r.n >= 2 && r.last.Sub(r.first) >= forceSpacing && now.Sub(c.lastForce) >= forceSpacing && c.forced < forceQuota
	if ok {
		c.lastForce = now
	}
	c.mu.Unlock()
	return ok && c.spend(ctx, true) == nil
}

// spend counts one fetch (or force_refresh) against today's counts, the
// cluster's with a store, and refuses it past the ceiling.
func (c *Cache) spend(ctx context.Context, force bool) error {
	now := c.cfg.Now()
	day := now.In(beijing).Format("2006-01-02")
	name := "fetches"
	if force {
		name = "forced"
	}
	n, err := int64(0), errStoreDown
	if c.cfg.Shared != nil {
		n, err = c.cfg.Shared.incr(ctx, c.cfg.Shared.Key(c.cfg.Name)+":"+name+":"+day)
	}
	c.mu.Lock()
	if c.day != day {
		c.day, c.fetches, c.forced = day, 0, 0
	}
	p := &c.fetches
	if force {
		p = &c.forced
	}
	if err != nil {
		n = *p + 1
	}
	*p = max(*p, n)
	over := !force && c.cfg.Ceiling > 0 && n > int64(c.cfg.Ceiling)
	if force {
		over = n > forceQuota
	}
	first := over && !force && c.ceilLog != day
	if first {
		c.ceilLog = day
	}
	c.mu.Unlock()
	if !over {
		return nil
	}
	if first {
		c.log().Error("daily fetch ceiling reached; no more fetches until midnight Beijing time", Event(EventCeiling),
			zap.String(FieldAppID, c.cfg.AppID), zap.String(FieldCredential, c.cfg.Name), zap.Int(FieldCeiling, c.cfg.Ceiling))
	}
	if force {
		return errors.New("force_refresh quota spent")
	}
	c.cfg.Observer.CeilingReached(c.cfg.Name)
	return ErrFetchCeiling
}

func (c *Cache) logFetch(t *Token, force bool) {
	c.log().Info(c.cfg.Name+" fetched", Event(EventFetch), zap.String(FieldSource, t.Source),
		zap.String(FieldAppID, c.cfg.AppID), zap.String(FieldCredential, c.cfg.Name), zap.Bool(FieldForceRefresh, force),
		zap.Int64(FieldExpiresIn, int64(t.ExpiresAt.Sub(t.FetchedAt)/time.Second)))
}

// publish makes t the token requests use, unless a newer one is already
// there: an old token never overwrites a new one.
func (c *Cache) publish(t *Token) {
	c.mu.Lock()
	bad := c.lastBad
	c.mu.Unlock()
	for {
		old := c.cur.Load()
		if old != nil && old.FetchedAt.After(t.FetchedAt) && old.Value != bad {
			return
		}
		if c.cur.CompareAndSwap(old, t) {
			break
		}
	}
	c.mu.Lock()
	c.failures, c.retryAt, c.lastErr = 0, time.Time{}, nil
	if t.Value == c.lastBad {
		c.lastBad = "" // the endpoint vouched for it
	}
	if c.nrecent == 0 || c.recent[(c.nrecent-1)%recentMax] != t.Value {
		c.recent[c.nrecent%recentMax] = t.Value
		c.nrecent++
	}
	ttl := t.ExpiresAt.Sub(t.FetchedAt)
	early := c.cfg.Window.Min + time.Duration(c.cfg.Rand()*float64(c.cfg.Window.Max-c.cfg.Window.Min))
	c.renewAt = t.ExpiresAt.Add(-min(early, ttl/2))
	if c.cfg.Spread && !c.spread {
		// Only the cache's first token: a peer's, or one from before a
		// restart, already has its phase.
		c.spread = true
		if life := c.renewAt.Sub(t.FetchedAt); life > 0 && t.Source == "fetch" {
			c.renewAt = t.FetchedAt.Add(time.Duration(c.cfg.Rand() * float64(life)))
		}
	}
	c.mu.Unlock()
	c.reschedule()
}

// Recent returns the last few token values this cache held, newest
// last, so that the request path can scrub them from answers.
func (c *Cache) Recent() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := min(c.nrecent, recentMax)
	out := make([]string, 0, n)
	for i := c.nrecent - n; i < c.nrecent; i++ {
		out = append(out, c.recent[i%recentMax])
	}
	return out
}

// failed records a failed load and backs off: 5 s, 10 s, 20 s … 5 min.
func (c *Cache) failed(err error) {
	c.mu.Lock()
	c.failures++
	d := min(backoffBase<<min(c.failures-1, 6), backoffMax)
	now := c.cfg.Now()
	c.retryAt = now.Add(d)
	c.lastErr, c.lastErrAt = err, now
	c.mu.Unlock()
	fields := []zap.Field{Event(EventFetchFailed), zap.String(FieldAppID, c.cfg.AppID), zap.String(FieldCredential, c.cfg.Name),
		zap.Duration(FieldRetryIn, d), zap.String(FieldError, err.Error())}
	var ae *APIError
	if errors.As(err, &ae) {
		fields = append(fields, zap.Int(FieldErrcode, ae.Code))
	}
	c.log().Error("credential fetch failed", fields...)
	c.reschedule()
}

// ClearBackoff ends a backoff early, when what it waited for has just
// changed (a component_verify_ticket was pushed, an authorizer was
// authorized again): the next request fetches at once.
func (c *Cache) ClearBackoff() {
	c.mu.Lock()
	c.failures, c.retryAt, c.lastErr = 0, time.Time{}, nil
	c.mu.Unlock()
	c.reschedule()
}

func (c *Cache) backoffErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr == nil {
		return nil
	}
	if wait := c.retryAt.Sub(c.cfg.Now()); wait > 0 {
		return &BackoffError{Err: c.lastErr, RetryIn: wait}
	}
	return nil
}

// Warm adopts a usable token from the store, so that after a restart on
// a durable store the first requests wait for no fetch.
func (c *Cache) Warm(ctx context.Context) bool {
	if c.cfg.Shared == nil {
		return false
	}
	t := c.cfg.Shared.load(ctx, c.cfg.Name)
	if !t.usable(c.cfg.Now()) {
		return false
	}
	c.publish(t)
	return true
}

// Offer publishes a token obtained outside a fetch (api_query_auth hands
// out an authorizer's first token), and stores it for the cluster, so
// that it is not fetched again. The newer-wins rule applies.
func (c *Cache) Offer(ctx context.Context, t *Token) {
	if c.cfg.Shared != nil {
		t = c.cfg.Shared.save(ctx, c.cfg.Shared.Key(c.cfg.Name), t, "")
	}
	c.publish(t)
}

// tick is the scheduler's call: renew when due, else (with a store) adopt
// a peer's newer token.
func (c *Cache) tick() {
	if c.ctx.Err() != nil {
		return
	}
	now := c.cfg.Now()
	c.mu.Lock()
	due := !c.renewAt.IsZero() && !now.Before(c.renewAt)
	bad := c.lastBad
	c.mu.Unlock()
	cur := c.cur.Load()
	switch {
	case due && c.backoffErr() == nil:
		<-c.sf.DoChan("t", func() (any, error) { return c.load(true) })
	case c.cfg.Shared != nil && cur != nil:
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.FetchTimeout)
		t := c.cfg.Shared.peek(ctx, c.cfg.Name, cur, bad)
		cancel()
		if t.usable(now) && t.Value != bad && t.FetchedAt.After(cur.FetchedAt) {
			c.publish(t)
		}
	}
	c.reschedule()
}

// next is when the scheduler should call tick; zero for never.
func (c *Cache) next() time.Time {
	c.mu.Lock()
	at := c.renewAt
	if c.lastErr != nil && c.retryAt.After(at) && !at.IsZero() {
		at = c.retryAt
	}
	c.mu.Unlock()
	if c.cfg.Shared != nil && c.cfg.PeekInterval >= 0 && c.cur.Load() != nil {
		every := c.cfg.PeekInterval
		if every == 0 {
			every = peekInterval
		}
		if p := c.cfg.Now().Add(every); at.IsZero() || p.Before(at) {
			at = p
		}
	}
	return at
}

func (c *Cache) reschedule() {
	if c.cfg.Scheduler != nil && c.ctx.Err() == nil {
		c.cfg.Scheduler.schedule(c, c.next())
	}
}

// Close cancels the cache's context, which ends any fetch in flight at
// once, and leaves the scheduler. It does not close the Shared.
func (c *Cache) Close() error {
	c.cancel()
	if c.cfg.Scheduler != nil {
		c.cfg.Scheduler.remove(c)
	}
	return nil
}

// Status is a snapshot for the status view and metrics. It never holds
// a token.
type Status struct {
	Name           string    `json:"name"`
	FetchedAt      time.Time `json:"fetched_at,omitzero"`
	ExpiresAt      time.Time `json:"expires_at,omitzero"`
	RenewAt        time.Time `json:"renew_at,omitzero"`
	Source         string    `json:"source,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	LastErrorAt    time.Time `json:"last_error_at,omitzero"`
	RetryAt        time.Time `json:"retry_at,omitzero"`
	Day            string    `json:"day,omitempty"`
	Fetches        int64     `json:"fetches_today"`
	Forced         int64     `json:"force_refreshes_today"`
	Ceiling        int       `json:"ceiling"`
	CeilingReached bool      `json:"ceiling_reached"`
	StoreDown      bool      `json:"store_down,omitempty"`
}

// Status returns a snapshot.
func (c *Cache) Status() Status {
	s := Status{Name: c.cfg.Name, Ceiling: max(c.cfg.Ceiling, 0)}
	if t := c.cur.Load(); t != nil {
		s.FetchedAt, s.ExpiresAt, s.Source = t.FetchedAt, t.ExpiresAt, t.Source
	}
	c.mu.Lock()
	s.RenewAt = c.renewAt
	if c.lastErr != nil {
		s.LastError, s.LastErrorAt, s.RetryAt = ClientText(c.lastErr), c.lastErrAt, c.retryAt
	}
	s.Day, s.Fetches, s.Forced = c.day, c.fetches, c.forced
	s.CeilingReached = c.cfg.Ceiling > 0 && c.fetches >= int64(c.cfg.Ceiling) && c.day == c.cfg.Now().In(beijing).Format("2006-01-02")
	c.mu.Unlock()
	if c.cfg.Shared != nil {
		s.StoreDown = c.cfg.Shared.BreakerOpen()
	}
	return s
}

type auxEntry struct {
	name string
	v    []byte
}

// auxView gives a Source its credential's auxiliary values: sealed in
// the store when there is one, in memory otherwise.
type auxView struct{ c *Cache }

func (a auxView) key(name string) string {
	return a.c.cfg.Shared.Key(a.c.cfg.Name) + ":aux:" + name
}

func (a auxView) Get(ctx context.Context, name string) ([]byte, error) {
	if a.c.cfg.Shared != nil {
		v, err := a.c.cfg.Shared.auxGet(ctx, a.key(name))
		if err == nil || errors.Is(err, ErrNotFound) {
			return v, err
		}
		// Store down: fall back to what this process last saw.
	}
	a.c.mu.Lock()
	defer a.c.mu.Unlock()
	for _, e := range a.c.aux {
		if e.name == name {
			return e.v, nil
		}
	}
	return nil, ErrNotFound
}

func (a auxView) Put(ctx context.Context, name string, v []byte) error {
	a.c.mu.Lock()
	cp := append([]byte(nil), v...)
	found := false
	for i := range a.c.aux {
		if a.c.aux[i].name == name {
			a.c.aux[i].v, found = cp, true
		}
	}
	if !found {
		a.c.aux = append(a.c.aux, auxEntry{name, cp})
	}
	a.c.mu.Unlock()
	if a.c.cfg.Shared != nil {
		return a.c.cfg.Shared.auxPut(ctx, a.key(name), v)
	}
	return nil
}

// Aux gives the Caddy layer the same view of auxiliary values that a
// Source gets (e.g. to store a pushed component_verify_ticket).
func (c *Cache) Aux() Aux { return auxView{c} }

// Refresh renews the credential now, as refresh-ahead would, joining a
// fetch already in flight. With a store, a newer peer value is adopted
// instead of fetching.
func (c *Cache) Refresh(ctx context.Context) (*Token, error) {
	ch := c.sf.DoChan("t", func() (any, error) { return c.load(true) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Token), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
