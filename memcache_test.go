package wechat

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

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

// JS-SDK tickets go through the same cluster protocol as the token: three
// instances asking at once make one getticket call, and a renewal by one
// instance is picked up by the others.
func TestMemcacheTicketsShared(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIStable, mc.Addr)
	accts := []*mcAccount{c.account(), c.account(), c.account()}
	caches := []*ticketCache{{typ: "jsapi"}, {typ: "jsapi"}, {typ: "jsapi"}}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := i % 3
			e, err := caches[k].get(tctx(t), accts[k].account, 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			seen[e.value]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if n := c.fake.Fetches("ticket"); n != 1 || len(seen) != 1 {
		t.Fatalf("getticket calls = %d, distinct tickets = %d; want 1 and 1 for the cluster", n, len(seen))
	}
	if n := c.tokenFetches(); n != 1 {
		t.Errorf("token fetches = %d, want 1", n)
	}
	// One instance renews ahead; another then finds the newer ticket in
	// memcache instead of calling WeChat.
	first := caches[0].cur.Load()
	if _, err := caches[0].load(accts[0].account, 5*time.Second, true); err != nil {
		t.Fatal(err)
	}
	if c.fake.Fetches("ticket") != 2 {
		t.Fatalf("the renewal did not call getticket (%d calls)", c.fake.Fetches("ticket"))
	}
	renewed, err := caches[1].load(accts[1].account, 5*time.Second, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.fake.Fetches("ticket") != 2 || renewed.shared.FetchedAt.Before(caches[0].cur.Load().shared.FetchedAt) || renewed.shared.Source != "memcache" {
		t.Errorf("a peer's renewal was not picked up from memcache (calls %d, source %s)", c.fake.Fetches("ticket"), renewed.shared.Source)
	}
	if first.value == "" {
		t.Error("no ticket")
	}
}
