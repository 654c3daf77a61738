package wechat

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-wechat/wechat/fakewechat"
)

const (
	mcAppID  = "wx_mc_test_app"
	mcSecret = "mc-secret-do-not-log"
	mcKey    = "acct_0123456789abcdef" // what accountKey would give: a hash-like name
)

// testClock is real time plus an offset tests can move forward, so the
// breaker's cool-off passes without sleeping.
type testClock struct{ off atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *testClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// mcCluster is one fake WeChat and a set of memcache servers; every
// account it builds is a separate in-process layer sharing the same key,
// like several gateway instances.
type mcCluster struct {
	t       *testing.T
	api     string
	fake    *fakewechat.Server
	srv     *httptest.Server
	servers []string
	prefix  string
	timeout time.Duration
	clock   *testClock
	raw     *memcache.Client // the test's own view of memcache
}

// mcAccountSeq numbers test accounts, for unique metric labels.
var mcAccountSeq atomic.Int64

func newMCCluster(t *testing.T, api string, servers ...string) *mcCluster {
	t.Helper()
	fake := fakewechat.New(fakewechat.Options{AppID: mcAppID, Secret: mcSecret})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	raw := memcache.New(servers...)
	raw.Timeout = 2 * time.Second
	t.Cleanup(func() { _ = raw.Close() })
	return &mcCluster{t: t, api: api, fake: fake, srv: srv, servers: servers, prefix: "wechat:",
		timeout: time.Second, clock: new(testClock), raw: raw}
}

// tokenFetches counts calls to the fake's token endpoint of c.api.
func (c *mcCluster) tokenFetches() int { return c.fake.Fetches(c.api) }

type mcAccount struct {
	*account
	s    *memcacheStore
	logs *observer.ObservedLogs
	mid  string // metrics appid label
}

// account builds a new instance's account, fetching through the fake.
func (c *mcCluster) account() *mcAccount { return c.accountVia(c.srv.URL) }

func (c *mcCluster) accountVia(base string) *mcAccount {
	t := c.t
	t.Helper()
	a, err := newAccount(mcKey, mcAppID, c.api, storeConfig{servers: c.servers, prefix: c.prefix, timeout: c.timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Destruct() })
	a.now = c.clock.Now
	a.setFetchTimeout(5 * time.Second)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	a.fetcher.Store(&fetcher{rt: http.DefaultTransport, bases: []*url.URL{u}, appid: mcAppID, secret: mcSecret, api: c.api, now: a.now})
	core, logs := observer.New(zap.InfoLevel)
	a.logger.Store(zap.New(core))
	mid := fmt.Sprintf("%s#%d", t.Name(), mcAccountSeq.Add(1)) // unique across -count runs
	a.metrics.Store(&metrics{appid: mid})
	return &mcAccount{account: a, s: a.store.(*memcacheStore), logs: logs, mid: mid}
}

// stored returns what memcache holds under the token key (nil: nothing
// usable).
func (c *mcCluster) stored() *tokenEntry {
	c.t.Helper()
	key := c.key()
	it, err := c.raw.Get(key)
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil
	}
	if err != nil {
		c.t.Fatalf("reading %s from memcache: %v", key, err)
	}
	e, err := decodeEntry(it.Value)
	if err != nil {
		c.t.Fatalf("stored value does not decode: %v", err)
	}
	return e
}

// key is the token key the accounts use.
func (c *mcCluster) key() string { return c.prefix + mcKey }

func (c *mcCluster) leaseValue() (string, bool) {
	c.t.Helper()
	it, err := c.raw.Get(c.key() + ":lease")
	if errors.Is(err, memcache.ErrCacheMiss) {
		return "", false
	}
	if err != nil {
		c.t.Fatalf("reading the lease: %v", err)
	}
	return string(it.Value), true
}

func memcacheErrorCount(t *testing.T, mid, op string) float64 {
	t.Helper()
	var m dto.Metric
	if err := metricMemcacheErrors.WithLabelValues(mid, op).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// concurrentTokens runs n Token calls spread over accounts and returns the
// distinct token values they got.
func concurrentTokens(t *testing.T, n int, accts ...*mcAccount) map[string]int {
	t.Helper()
	ctx := tctx(t)
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for i := range n {
		a := accts[i%len(accts)]
		wg.Go(func() {
			e, err := a.Token(ctx)
			if err != nil {
				t.Errorf("Token: %v", err)
				return
			}
			mu.Lock()
			got[e.Value]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return got
}

func onlyToken(t *testing.T, got map[string]int) string {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("callers got %d different tokens, want 1", len(got))
	}
	for v := range got {
		return v
	}
	return ""
}

func TestMemcacheColdStart(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIStable, mc.Addr)
	c.fake.SetTokenDelay(200 * time.Millisecond) // the others arrive while the fetch is in flight
	accts := []*mcAccount{c.account(), c.account(), c.account()}

	tok := onlyToken(t, concurrentTokens(t, 150, accts...))

	if n := c.tokenFetches(); n != 1 {
		t.Fatalf("token fetches = %d, want exactly 1 for the whole cluster", n)
	}
	if !c.fake.ValidToken(tok) {
		t.Fatal("the shared token is not valid at WeChat")
	}
	if e := c.stored(); e == nil || e.Value != tok {
		t.Fatal("memcache does not hold the fetched token")
	}
	if _, held := c.leaseValue(); held {
		t.Fatal("the lease was not released after the fetch")
	}
	sources := map[string]int{}
	for _, a := range accts {
		sources[a.cur.Load().Source]++
	}
	if sources["fetch"] != 1 || sources["memcache"] != 2 {
		t.Fatalf("token sources = %v, want one fetch and two from memcache", sources)
	}
}

func TestMemcacheJoinWarmCluster(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIStable, mc.Addr)
	first := c.account()
	e1, err := first.Token(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	joiner := c.account()
	e2, err := joiner.Token(tctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if n := c.tokenFetches(); n != 1 {
		t.Fatalf("token fetches = %d, want 1: the new instance must use the shared token", n)
	}
	if e2.Value != e1.Value || e2.Source != "memcache" {
		t.Fatalf("joiner got source %q (same token: %v), want the shared token from memcache", e2.Source, e2.Value == e1.Value)
	}
	if !e2.FetchedAt.Equal(e1.FetchedAt) || !e2.ExpiresAt.Equal(e1.ExpiresAt) {
		t.Fatal("the shared token lost its fetch or expiry time on the way through memcache")
	}
}

func TestMemcacheInvalidTokenStorm(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIStable, mc.Addr)
	a, b := c.account(), c.account()
	ctx := tctx(t)
	ea, err := a.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eb, err := b.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ea.Value != eb.Value || c.tokenFetches() != 1 {
		t.Fatalf("warm-up: fetches = %d, shared = %v", c.tokenFetches(), ea.Value == eb.Value)
	}

	// WeChat revokes the token; every instance sees 40001 at once.
	c.fake.RevokeAll()
	c.fake.SetTokenDelay(100 * time.Millisecond)
	if !a.Invalidate(ea) || !b.Invalidate(eb) {
		t.Fatal("Invalidate of the current token failed")
	}
	tok := onlyToken(t, concurrentTokens(t, 200, a, b))
	if n := c.tokenFetches(); n != 2 {
		t.Fatalf("token fetches = %d, want 2 (1 warm-up + 1 for the whole storm)", n)
	}
	if f := c.fake.Fetches("stable_force"); f != 0 {
		t.Fatalf("force_refresh calls = %d, want 0: a normal fetch gives a new token after revocation", f)
	}
	if tok == ea.Value || !c.fake.ValidToken(tok) {
		t.Fatal("after the storm the cluster does not hold a new, valid token")
	}

	// Again, but one instance hits the error first: the other, when its
	// own token fails later, finds the newer token in memcache.
	c.fake.SetTokenDelay(0)
	c.fake.RevokeAll()
	old := a.cur.Load()
	if !a.Invalidate(old) {
		t.Fatal("Invalidate failed")
	}
	na, err := a.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := c.tokenFetches(); n != 3 || na.Value == old.Value {
		t.Fatalf("first instance: fetches = %d, new token = %v", n, na.Value != old.Value)
	}
	stale, err := b.Token(ctx) // still the revoked one, from b's own cache
	if err != nil {
		t.Fatal(err)
	}
	if stale.Value != old.Value {
		t.Fatal("b should still hold the revoked token in-process")
	}
	b.Invalidate(stale)
	nb, err := b.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := c.tokenFetches(); n != 3 {
		t.Fatalf("fetches = %d, want 3: b must use the newer token from memcache", n)
	}
	if nb.Value != na.Value || nb.Source != "memcache" {
		t.Fatalf("b got source %q, same as a: %v", nb.Source, nb.Value == na.Value)
	}
}

// gate holds the answer of one token fetch until released, to make a
// fetch that finishes late.
type gate struct {
	fake    http.Handler
	armed   atomic.Bool
	reached chan struct{}
	release chan struct{}
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	g.fake.ServeHTTP(rec, r)
	if g.armed.CompareAndSwap(true, false) {
		close(g.reached)
		<-g.release
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func TestMemcacheNewerWins(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIClassic, mc.Addr)
	g := &gate{fake: c.fake, reached: make(chan struct{}), release: make(chan struct{})}
	slowSrv := httptest.NewServer(g)
	t.Cleanup(slowSrv.Close)
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(g.release) }) }
	t.Cleanup(release) // a failed test must not leave the handler blocked
	slow, fast := c.accountVia(slowSrv.URL), c.account()
	ctx := tctx(t)

	g.armed.Store(true)
	type result struct {
		e   *tokenEntry
		err error
	}
	done := make(chan result, 1)
	go func() {
		e, err := slow.s.obtain(ctx, "", false)
		done <- result{e, err}
	}()
	<-g.reached // slow holds the lease and WeChat has issued its token; the answer is held up
	lease, held := c.leaseValue()
	if !held {
		t.Fatal("the slow fetcher does not hold the lease")
	}
	// Its lease expires (simulated) and another instance fetches a newer token.
	if err := c.raw.Delete(c.key() + ":lease"); err != nil {
		t.Fatal(err)
	}
	ef, err := fast.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.tokenFetches() != 2 || ef.Source != "fetch" {
		t.Fatalf("fetches = %d, source %q: the second instance should have fetched", c.tokenFetches(), ef.Source)
	}
	// A third instance holds the lease now; the slow one must not drop it.
	if err := c.raw.Set(&memcache.Item{Key: c.key() + ":lease", Value: []byte("third-holder"), Expiration: 30}); err != nil {
		t.Fatal(err)
	}
	release()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if st := c.stored(); st == nil || st.Value != ef.Value {
		t.Fatal("the late, older token overwrote the newer one in memcache")
	}
	if r.e.Value != ef.Value || !r.e.FetchedAt.Equal(ef.FetchedAt) {
		t.Fatal("the late fetcher did not switch to the newer stored token")
	}
	if v, _ := c.leaseValue(); v != "third-holder" || v == lease {
		t.Fatalf("the late fetcher released a lease that was no longer its own (lease now %q)", v)
	}
	if c.tokenFetches() != 2 {
		t.Fatalf("fetches = %d, want 2", c.tokenFetches())
	}
}

func TestMemcacheLeaseHolderDies(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIStable, mc.Addr)
	a := c.account()
	a.setFetchTimeout(time.Second)
	ttl := a.s.leaseTTL()
	if ttl < minLeaseTTL || time.Duration(ttl)*time.Second < a.fetchTimeout()+time.Second {
		t.Fatalf("lease TTL %ds does not outlive a %s fetch", ttl, a.fetchTimeout())
	}
	if time.Duration(ttl)*time.Second+a.fetchTimeout() >= a.loadTimeout() {
		t.Fatalf("waiters (%s) give up before a dead holder's lease (%ds) expires and they can fetch", a.loadTimeout(), ttl)
	}
	// A holder that took the lease and died: never released.
	if err := c.raw.Add(&memcache.Item{Key: c.key() + ":lease", Value: []byte("dead-holder"), Expiration: ttl}); err != nil {
		t.Fatal(err)
	}

	// While the lease lives, nobody fetches: a short wait gives up.
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err := a.s.obtain(short, "", false)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("obtain under a live foreign lease: err = %v, want a deadline error", err)
	}
	if n := c.tokenFetches(); n != 0 {
		t.Fatalf("fetched %d times while another instance held the lease", n)
	}

	done := make(chan *tokenEntry, 1)
	ctx := tctx(t)
	go func() {
		e, err := a.s.obtain(ctx, "", false)
		if err != nil {
			t.Error(err)
		}
		done <- e
	}()
	sawWaiting := false
	var e *tokenEntry
watch:
	for {
		select {
		case e = <-done:
			break watch
		case <-time.After(20 * time.Millisecond):
		}
		// Read the fetch count first: if the dead lease still exists
		// afterwards, it existed during any fetch counted.
		f := c.tokenFetches()
		if v, ok := c.leaseValue(); ok && v == "dead-holder" {
			sawWaiting = true
			if f != 0 {
				t.Fatal("fetched while the dead holder's lease was still live")
			}
		}
	}
	if e == nil {
		t.FailNow()
	}
	if !sawWaiting {
		t.Fatal("the test never saw obtain waiting on the dead lease")
	}
	if n := c.tokenFetches(); n != 1 || e.Source != "fetch" {
		t.Fatalf("after the lease expired: fetches = %d, source %q; want one takeover fetch", n, e.Source)
	}
	if st := c.stored(); st == nil || st.Value != e.Value {
		t.Fatal("the takeover did not store its token")
	}
	if _, held := c.leaseValue(); held {
		t.Fatal("the takeover did not release its lease")
	}
}

func TestMemcacheDownAndRecovery(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIStable, mc.Addr)
	a := c.account()
	ctx := tctx(t)
	e0, err := a.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Several idle connections in the pool: after the restart they are
	// all dead, and the recovery must not trip over them one by one.
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() { a.s.peek(ctx) })
	}
	wg.Wait()

	mc.Kill()
	before := a.s.attempts.Load()
	for i := range 20 {
		e, err := a.s.obtain(ctx, "", false)
		if err != nil {
			t.Fatalf("obtain %d with memcache down: %v", i, err)
		}
		if e.Source != "fetch" || !c.fake.ValidToken(e.Value) {
			t.Fatalf("obtain %d: source %q, want a local fetch of a valid token", i, e.Source)
		}
	}
	if n := a.s.attempts.Load() - before; n != 1 {
		t.Fatalf("memcache attempts for 20 obtains = %d, want 1 (then the breaker skips memcache)", n)
	}
	if !a.s.breakerOpen(c.clock.Now()) {
		t.Fatal("breaker not open with memcache down")
	}
	if n := c.tokenFetches(); n != 21 {
		t.Fatalf("fetches = %d, want 21 (1 + 20 local)", n)
	}
	if _, _, ok := a.s.countFetch(ctx, "2026-01-01", false); ok {
		t.Fatal("countFetch reported ok with memcache down")
	}
	if n := a.s.attempts.Load() - before; n != 1 {
		t.Fatalf("countFetch touched memcache with the breaker open (%d attempts)", n)
	}
	if n := a.logs.FilterMessageSnippet("memcache failed").Len(); n != 1 {
		t.Fatalf("memcache failure logged %d times, want once per breaker opening", n)
	}
	if n := memcacheErrorCount(t, a.mid, "get"); n != 1 {
		t.Fatalf("memcache_errors_total{op=get} = %v, want 1", n)
	}
	for _, l := range a.logs.All() {
		for _, f := range l.Context {
			if strings.Contains(f.String, e0.Value) || strings.Contains(f.String, mcSecret) {
				t.Fatalf("log %q holds a token or the secret", l.Message)
			}
		}
	}

	// A cold instance still serves, with one memcache attempt in all.
	b := c.account()
	if tok := onlyToken(t, concurrentTokens(t, 50, b)); !c.fake.ValidToken(tok) {
		t.Fatal("cold instance got an invalid token")
	}
	if n := b.s.attempts.Load(); n != 1 {
		t.Fatalf("cold instance: memcache attempts = %d, want 1", n)
	}

	// memcached comes back, empty. After the cool-off the refresher's
	// peek probes it, closes the breaker and writes the token back.
	mc.Restart()
	c.clock.Advance(breakerCooloff + time.Second)
	if !a.s.breakerOpen(c.clock.Now()) {
		t.Fatal("breaker closed before any probe")
	}
	if _, ok := a.s.peek(ctx); ok {
		t.Fatal("peek found a token in a freshly restarted memcached")
	}
	if a.s.breakerOpen(c.clock.Now()) {
		t.Fatal("breaker still open after the probe: memcached is back")
	}
	if n := a.logs.FilterMessageSnippet("memcache reachable again").Len(); n != 1 {
		t.Fatalf("recovery logged %d times, want 1", n)
	}
	cur := a.cur.Load()
	if st := c.stored(); st == nil || st.Value != cur.Value {
		t.Fatal("the token was not written back to memcache after recovery")
	}
	fetches := c.tokenFetches()
	joiner := c.account()
	ej, err := joiner.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ej.Source != "memcache" || ej.Value != cur.Value || c.tokenFetches() != fetches {
		t.Fatalf("after recovery a new instance got source %q and fetched %d times", ej.Source, c.tokenFetches()-fetches)
	}
	// b recovers on its next use as well.
	eb, err := b.s.obtain(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if b.s.breakerOpen(c.clock.Now()) || eb.Source != "memcache" || c.tokenFetches() != fetches {
		t.Fatalf("b did not recover: breaker %v, source %q", b.s.breakerOpen(c.clock.Now()), eb.Source)
	}
}

func TestMemcacheBlackHole(t *testing.T) {
	bh := startBlackHole(t)
	c := newMCCluster(t, tokenAPIStable, bh.Addr())
	c.timeout = 200 * time.Millisecond
	a := c.account()
	ctx := tctx(t)
	e, err := a.Token(ctx)
	if err != nil {
		t.Fatalf("Token with a black-holed memcache: %v", err)
	}
	if e.Source != "fetch" || !c.fake.ValidToken(e.Value) {
		t.Fatalf("source %q: want a local fetch", e.Source)
	}
	if !a.s.breakerOpen(c.clock.Now()) {
		t.Fatal("breaker not open after a memcache timeout")
	}
	for i := range 20 {
		if _, err := a.s.obtain(ctx, "", false); err != nil {
			t.Fatalf("obtain %d: %v", i, err)
		}
	}
	if n := a.s.attempts.Load(); n != 1 {
		t.Fatalf("memcache attempts = %d, want 1: only the first call may wait for the timeout", n)
	}
	for deadline := time.Now().Add(5 * time.Second); bh.accepted() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // the accept loop may lag behind the kernel's handshake
	}
	if n := bh.accepted(); n != 1 {
		t.Fatalf("connections to the black hole = %d, want 1", n)
	}
	if n := a.logs.FilterMessageSnippet("memcache failed").Len(); n != 1 {
		t.Fatalf("failure logged %d times, want 1", n)
	}
	if n := memcacheErrorCount(t, a.mid, "get"); n != 1 {
		t.Fatalf("memcache_errors_total{op=get} = %v, want 1", n)
	}
	if _, ok := a.s.peek(ctx); ok {
		t.Fatal("peek succeeded against a black hole")
	}
	if n := a.s.attempts.Load(); n != 1 {
		t.Fatalf("peek went to memcache with the breaker open (%d attempts)", n)
	}

	// After the cool-off one probe goes out; it times out too, and the
	// breaker stays open without logging again.
	c.clock.Advance(breakerCooloff + time.Second)
	for range 10 {
		if _, err := a.s.obtain(ctx, "", false); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.s.attempts.Load(); n != 2 {
		t.Fatalf("memcache attempts after the cool-off = %d, want 2 (one probe)", n)
	}
	if !a.s.breakerOpen(c.clock.Now()) {
		t.Fatal("breaker closed after a failed probe")
	}
	if n := a.logs.FilterMessageSnippet("memcache failed").Len(); n != 1 {
		t.Fatalf("failure logged %d times, want 1 for the whole outage", n)
	}
}

// TestMemcacheRefresherPicksUpPeerToken: one instance renews ahead; the
// other's refresher finds the newer token in memcache with no fetch.
func TestMemcacheRefresherPicksUpPeerToken(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIClassic, mc.Addr)
	a, b := c.account(), c.account()
	old := onlyToken(t, concurrentTokens(t, 10, a, b))
	ctx := tctx(t)
	// b renews ahead: memcache holds nothing newer than b's token, so b
	// takes the lease and fetches the next one.
	nb, err := b.s.obtain(ctx, "", true)
	if err != nil {
		t.Fatal(err)
	}
	if nb.Value == old || c.tokenFetches() != 2 {
		t.Fatalf("refresh ahead: fetches = %d, new token = %v", c.tokenFetches(), nb.Value != old)
	}
	// a still holds the old token; its refresher's minute poll peeks
	// and switches to the newer one.
	b.publish(nb)
	a.refresher.tick(c.clock.Now())
	if cur := a.cur.Load(); cur.Value != nb.Value || cur.Source != "memcache" {
		t.Fatalf("a's refresher did not pick up the peer's newer token (source %q)", cur.Source)
	}
	if n := c.tokenFetches(); n != 2 {
		t.Fatalf("fetches = %d, want 2", n)
	}
}

func TestMemcacheFlushAll(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIClassic, mc.Addr)
	a, b := c.account(), c.account()
	old := onlyToken(t, concurrentTokens(t, 20, a, b))
	if n := c.tokenFetches(); n != 1 {
		t.Fatalf("warm-up fetches = %d, want 1", n)
	}

	mc.FlushAll()
	if c.stored() != nil {
		t.Fatal("flush_all left the token in memcache")
	}
	a.cur.Store(nil) // cold in-process caches, e.g. after restarts
	b.cur.Store(nil)
	n := c.account()
	tok := onlyToken(t, concurrentTokens(t, 90, a, b, n))
	if f := c.tokenFetches(); f != 2 {
		t.Fatalf("fetches after flush_all = %d, want exactly 1 more", f-1)
	}
	if tok == old || !c.fake.ValidToken(tok) {
		t.Fatal("after flush_all the cluster did not converge on one new token")
	}
	if st := c.stored(); st == nil || st.Value != tok {
		t.Fatal("the new token was not stored")
	}
}

func TestMemcacheUnusableValue(t *testing.T) {
	mc := startMemcached(t)
	now := time.Now()
	ts := func(t time.Time) string { return fmt.Sprint(t.UnixNano()) }
	cases := map[string]string{
		"garbage":        "garbage \x00\x01 value",
		"json":           `{"access_token":"ACCESS_TOKEN_FROM_ELSEWHERE","expires_in":7200}`,
		"older version":  "w0 " + ts(now) + " " + ts(now.Add(time.Hour)) + " OLD_FORMAT_TOKEN",
		"other version":  "w2 " + ts(now) + " " + ts(now.Add(time.Hour)) + " NEW_FORMAT_TOKEN",
		"bad number":     "w1 yesterday " + ts(now.Add(time.Hour)) + " TOKEN",
		"empty token":    "w1 " + ts(now) + " " + ts(now.Add(time.Hour)) + " ",
		"expired":        "w1 " + ts(now.Add(-3*time.Hour)) + " " + ts(now.Add(-time.Hour)) + " EXPIRED_TOKEN",
		"expiry < fetch": "w1 " + ts(now) + " " + ts(now.Add(-time.Hour)) + " TOKEN",
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			c := newMCCluster(t, tokenAPIStable, mc.Addr)
			c.prefix = "wechat:" + strings.ReplaceAll(name, " ", "_") + ":"
			key := c.prefix + mcKey
			if err := c.raw.Set(&memcache.Item{Key: key, Value: []byte(value), Expiration: 3600}); err != nil {
				t.Fatal(err)
			}
			a := c.account()
			for range 3 {
				if _, ok := a.s.peek(tctx(t)); ok {
					t.Fatal("peek accepted an unusable value")
				}
			}
			tok := onlyToken(t, concurrentTokens(t, 30, a))
			if n := c.tokenFetches(); n != 1 {
				t.Fatalf("fetches = %d, want 1", n)
			}
			if a.cur.Load().Source != "fetch" {
				t.Fatal("the unusable value was used")
			}
			if st := c.stored(); st == nil || st.Value != tok {
				t.Fatal("the unusable value was not overwritten with the fetched token")
			}
			if n := a.logs.FilterMessageSnippet("unusable").Len(); n != 1 {
				t.Fatalf("unusable value logged %d times, want once", n)
			}
			for _, l := range a.logs.All() {
				for _, f := range l.Context {
					if strings.Contains(f.String, "TOKEN") || strings.Contains(f.String, tok) {
						t.Fatalf("log %q quotes the stored value", l.Message)
					}
				}
			}
			if a.s.breakerOpen(c.clock.Now()) {
				t.Fatal("a bad value opened the breaker: it is not a memcache failure")
			}
			b := c.account()
			if e, err := b.Token(tctx(t)); err != nil || e.Value != tok || c.tokenFetches() != 1 {
				t.Fatalf("a second instance did not use the repaired value: %v", err)
			}
		})
	}
}

func TestMemcacheCountFetch(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIStable, mc.Addr)
	a, b := c.account(), c.account()
	ctx := tctx(t)
	day := "2026-02-03"
	check := func(s *memcacheStore, force bool, wantTotal, wantForced int64) {
		t.Helper()
		total, forced, ok := s.countFetch(ctx, day, force)
		if !ok || total != wantTotal || forced != wantForced {
			t.Fatalf("countFetch(force=%v) = %d, %d, %v; want %d, %d, true", force, total, forced, ok, wantTotal, wantForced)
		}
	}
	check(a.s, false, 1, 0)
	check(b.s, true, 2, 1)
	check(a.s, false, 3, 1)
	// Another day is a separate count.
	if total, _, ok := a.s.countFetch(ctx, "2026-02-04", false); !ok || total != 1 {
		t.Fatalf("next day's count = %d, %v", total, ok)
	}
	// A junk counter restarts instead of failing forever.
	if err := c.raw.Set(&memcache.Item{Key: c.key() + ":fetches:" + day, Value: []byte("junk")}); err != nil {
		t.Fatal(err)
	}
	check(a.s, false, 1, 1)
	if a.s.breakerOpen(c.clock.Now()) {
		t.Fatal("a junk counter opened the breaker")
	}
	// The forced counter is shared too.
	it, err := c.raw.Get(c.key() + ":forced:" + day)
	if err != nil || string(it.Value) != "1" {
		t.Fatalf("forced counter: %v", err)
	}

	// A real fetch is counted in the cluster's count and shown in status.
	if _, err := a.Token(ctx); err != nil {
		t.Fatal(err)
	}
	today := c.clock.Now().In(beijing).Format("2006-01-02")
	it, err = c.raw.Get(c.key() + ":fetches:" + today)
	if err != nil || string(it.Value) != "1" {
		t.Fatalf("today's shared count after one fetch: %v", err)
	}
	if n := a.fetchesToday(); n != 1 {
		t.Fatalf("fetchesToday = %d, want 1", n)
	}
}

func TestMemcacheKeys(t *testing.T) {
	if k := memcacheKeyBase("wechat:", "abc"); k != "wechat:abc" {
		t.Fatalf("plain key changed: %q", k)
	}
	for _, prefix := range []string{"we chat:", "tab\t", "nl\n", "del\x7f", strings.Repeat("p", 240)} {
		k := memcacheKeyBase(prefix, mcKey)
		if len(k)+len(":fetches:2006-01-02") > 250 {
			t.Fatalf("key for prefix %q too long: %d", prefix, len(k))
		}
		for i := 0; i < len(k); i++ {
			if k[i] <= ' ' || k[i] == 0x7f {
				t.Fatalf("key for prefix %q holds byte %#x", prefix, k[i])
			}
		}
		if k == memcacheKeyBase("other", mcKey) {
			t.Fatal("different prefixes share a key")
		}
	}
	// Round trip of the value encoding.
	e := newEntry("TOKEN_abc-123", 7200, time.Now(), "fetch")
	d, err := decodeEntry(encodeEntry(e))
	if err != nil {
		t.Fatal(err)
	}
	if d.Value != e.Value || !d.FetchedAt.Equal(e.FetchedAt) || !d.ExpiresAt.Equal(e.ExpiresAt) || d.Source != "memcache" || !d.useBy.Equal(e.useBy) {
		t.Fatalf("round trip changed the entry: %+v", d)
	}
	if !strings.HasPrefix(string(encodeEntry(e)), "w1 ") {
		t.Fatal("value is not versioned")
	}
}

// TestMemcacheDoubleCheckAfterLease: a peer stores its token and releases
// the lease between our read and our Add; the new lease holder must use
// that token, not fetch again (WxJava #1222).
func TestMemcacheDoubleCheckAfterLease(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIStable, mc.Addr)
	peer, a := c.account(), c.account()
	ctx := tctx(t)
	if e, _, err := a.s.read(); err != nil || e != nil {
		t.Fatalf("store not empty at start: %v", err)
	}
	ep, err := peer.Token(ctx) // fetched and stored while a was between read and lease
	if err != nil {
		t.Fatal(err)
	}
	lease, won, err := a.s.acquire(a.s.leaseTTL())
	if err != nil || !won {
		t.Fatalf("acquire: won=%v err=%v", won, err)
	}
	e, err := a.s.lead(ctx, "", false, lease)
	if err != nil {
		t.Fatal(err)
	}
	if n := c.tokenFetches(); n != 1 || e.Value != ep.Value || e.Source != "memcache" {
		t.Fatalf("lease holder fetched again (%d fetches, source %q) instead of using the stored token", n, e.Source)
	}
	if _, held := c.leaseValue(); held {
		t.Fatal("lease not released")
	}
	// When refreshing ahead, the stored token is not newer than a's own,
	// so the holder does fetch.
	a.publish(e)
	lease, won, err = a.s.acquire(a.s.leaseTTL())
	if err != nil || !won {
		t.Fatalf("acquire: won=%v err=%v", won, err)
	}
	if _, err := a.s.lead(ctx, "", true, lease); err != nil {
		t.Fatal(err)
	}
	if n := c.tokenFetches(); n != 2 {
		t.Fatalf("refresh ahead: fetches = %d, want 2", n)
	}
}
