package wechat

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/fakewechat"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 23, 0, 0, 0, 0, beijing)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// clockedFake is a fake WeChat on a fake clock, served over loopback.
func clockedFake(t testing.TB) (*fakeClock, *fakewechat.Server, *httptest.Server) {
	t.Helper()
	clk := newFakeClock()
	fake := fakewechat.New(fakewechat.Options{AppID: testAppID, Secret: testSecret, Now: clk.Now})
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return clk, fake, srv
}

// simAccount is an account on a fake clock against a fake WeChat on the same
// clock, with its refresher driven by hand rather than by a goroutine.
func simAccount(t testing.TB, clk *fakeClock, fakeURL, api string, sc storeConfig) *account {
	t.Helper()
	a, err := newAccount(accountKey(testAppID, testSecret, api, sc.servers, sc.prefix), testAppID, api, sc)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(fakeURL)
	a.now = clk.Now
	a.fetcher.Store(&fetcher{rt: http.DefaultTransport, bases: []*url.URL{u}, appid: testAppID, secret: testSecret, api: api, now: clk.Now})
	return a
}

// step runs whatever the refresher would run at the clock's time.
func step(a *account, now time.Time) {
	if !now.Before(a.refresher.next(now)) {
		a.refresher.tick(now)
	}
}

// simulateDay runs 24 h of steady traffic (a request every 10 s on each
// account) with refresh-ahead, and reports how many requests had to wait
// for a fetch (slow path).
func simulateDay(t *testing.T, clk *fakeClock, accts []*account) (slow int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < 24*360; i++ {
		clk.Add(10 * time.Second)
		now := clk.Now()
		for _, a := range accts {
			step(a, now)
			if e := a.cur.Load(); e == nil || !now.Before(e.useBy) {
				slow++
			}
			if _, err := a.Token(ctx); err != nil {
				t.Fatalf("request at %s: %v", now, err)
			}
		}
	}
	return slow
}

func TestRefreshAheadDayInProcess(t *testing.T) {
	for _, api := range []string{tokenAPIStable, tokenAPIClassic} {
		t.Run(api, func(t *testing.T) {
			clk, fake, srv := clockedFake(t)
			a := simAccount(t, clk, srv.URL, api, storeConfig{})
			slow := simulateDay(t, clk, []*account{a})
			if slow != 1 {
				t.Errorf("%d requests waited for a fetch; only the cold start should", slow)
			}
			// 86400 s / (7200 s less the renewal lead): 12-14 fetches.
			if n := fake.Fetches(api); n < 12 || n > 14 {
				t.Errorf("%d fetches in 24 h, want 12-14", n)
			}
			if api == tokenAPIStable && fake.Fetches("stable_force") != 0 {
				t.Error("refresh-ahead must never use force_refresh")
			}
		})
	}
}

// A failed background refresh is retried with backoff while the current
// token keeps serving requests.
func TestRefreshAheadBacksOffOnFailure(t *testing.T) {
	clk, fake, srv := clockedFake(t)
	a := simAccount(t, clk, srv.URL, tokenAPIStable, storeConfig{})
	a.refresher.rand = func() float64 { return 0.99 } // the earliest renewal: the longest window
	first, err := a.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	fake.FailTokens(-1, "system error")
	// Walk to 40 s before the token's use-by, a minute at a time.
	for clk.Now().Before(first.useBy.Add(-40 * time.Second)) {
		clk.Add(10 * time.Second)
		step(a, clk.Now())
		if e, err := a.Token(context.Background()); err != nil || e != first {
			t.Fatalf("the current token must keep serving while renewals fail: %v", err)
		}
	}
	attempts := fake.Fetches("stable") - 1
	if attempts < 2 || attempts > 8 {
		t.Errorf("%d renewal attempts in the renewal window, want a few with backoff", attempts)
	}
	fake.FailTokens(0, "")
	for i := 0; i < 30 && a.cur.Load() == first; i++ {
		clk.Add(10 * time.Second)
		step(a, clk.Now())
	}
	if a.cur.Load() == first {
		t.Error("the refresher did not recover after the endpoint came back")
	}
}

// The refresher goroutine lives while any config uses the account and
// stops with the last one.
func TestRefresherLifecycle(t *testing.T) {
	f, g := setup(t, "")
	get(t, g.URL+"/cgi-bin/user/info")
	var a *account
	accounts.Range(func(_, v any) bool { a = v.(*account); return false })
	if a == nil || !a.refresher.isRunning() {
		t.Fatal("no running refresher for the account")
	}
	port := g.URL[len("http://127.0.0.1:"):]
	loadCaddyfile(t, "{\n\tadmin 127.0.0.1:"+g.Admin[len("127.0.0.1:"):]+"\n}\nhttp://127.0.0.1:"+port+" {\n\twechat {\n\t\tappid {env.TEST_WECHAT_APPID}\n\t\tsecret {env.TEST_WECHAT_SECRET}\n\t\tupstream "+f.URL+"\n\t\tfetch_timeout 5s\n\t}\n}\n")
	var b *account
	accounts.Range(func(_, v any) bool { b = v.(*account); return false })
	if b != a || !a.refresher.isRunning() {
		t.Fatal("a reload that keeps the account must keep its refresher")
	}
	resetAccounts(t)
	if a.refresher.isRunning() {
		t.Error("refresher still running after the last config was unloaded")
	}
}

// Past the daily force_refresh budget, a forced refresh is refused with a
// clear error; past half of a quota, a warning is logged once.
func TestForceRefreshBudget(t *testing.T) {
	clk, fake, srv := clockedFake(t)
	a := simAccount(t, clk, srv.URL, tokenAPIStable, storeConfig{})
	core, logs := observer.New(zapcore.DebugLevel)
	a.logger.Store(zap.New(core))
	for i := 0; i < quotaForce; i++ {
		a.budgetCount(true)
	}
	if n := logs.FilterMessageSnippet("daily quota").Len(); n != 1 {
		t.Errorf("%d quota warnings, want exactly 1", n)
	}
	e, err := a.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a.Invalidate(e)
	_, err = a.fetch(context.Background(), e.Value) // WeChat hands back the same token
	if err == nil || fake.Fetches("stable_force") != 0 {
		t.Fatalf("force_refresh past the daily limit must be refused, got err=%v", err)
	}
	clk.Add(24 * time.Hour) // a new day in Beijing resets the budget
	e2, err := a.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.fetch(context.Background(), e2.Value); err != nil || fake.Fetches("stable_force") != 1 {
		t.Errorf("a new day should allow force_refresh again: %v", err)
	}
}

// Three instances sharing memcache, 24 h of steady traffic: one instance
// renews each token through the lease and the others pick it up, so the
// cluster fetches no more than one instance alone would.
func TestRefreshAheadDayCluster(t *testing.T) {
	mc := startMemcached(t)
	clk, fake, srv := clockedFake(t)
	sc := storeConfig{servers: []string{mc.Addr}, prefix: "sim:", timeout: time.Second}
	var accts []*account
	for range 3 {
		a := simAccount(t, clk, srv.URL, tokenAPIStable, sc)
		t.Cleanup(func() { a.Destruct() })
		accts = append(accts, a)
	}
	slow := simulateDay(t, clk, accts)
	if slow > 3 {
		t.Errorf("%d requests waited for a fetch; only the cold start of each instance may", slow)
	}
	if n := fake.Fetches("stable"); n < 12 || n > 14 {
		t.Errorf("the cluster made %d fetches in 24 h, want 12-14 (one per renewal)", n)
	}
	// Every instance ends the day on the same token.
	for _, a := range accts[1:] {
		if a.cur.Load().Value != accts[0].cur.Load().Value {
			t.Error("instances disagree on the current token")
		}
	}
}

// quota_warn sets the share of the daily quota past which a warning is
// logged: classic fetches count against 2000 a day.
func TestQuotaWarnShare(t *testing.T) {
	clk := newFakeClock()
	a := simAccount(t, clk, "http://127.0.0.1:1", tokenAPIClassic, storeConfig{})
	f := *a.fetcher.Load()
	f.quotaWarn = 0.01 // 20 of 2000
	a.fetcher.Store(&f)
	core, logs := observer.New(zapcore.DebugLevel)
	a.logger.Store(zap.New(core))
	for i := 0; i < 19; i++ {
		a.budgetCount(false)
	}
	if logs.FilterMessageSnippet("daily quota").Len() != 0 {
		t.Fatal("warned before the share was reached")
	}
	for i := 0; i < 5; i++ {
		a.budgetCount(false)
	}
	if n := logs.FilterMessageSnippet("daily quota").Len(); n != 1 {
		t.Errorf("%d warnings at 24 of 2000 with quota_warn 0.01, want 1", n)
	}
}
