package integration

import (
	"fmt"
	"net/http"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Goroutine leak checks (issue 7) through a real Caddy: a manual stack
// diff, no dependencies.

var goroutineHeader = regexp.MustCompile(`^goroutine (\d+) \[`)

// goroutines returns every goroutine's stack by id.
func goroutines() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range strings.Split(string(buf), "\n\n") {
		if m := goroutineHeader.FindStringSubmatch(g); m != nil {
			out[m[1]] = g
		}
	}
	return out
}

// countStacks counts goroutines whose stack mentions s.
func countStacks(s string) int {
	n := 0
	for _, g := range goroutines() {
		if strings.Contains(g, s) {
			n++
		}
	}
	return n
}

// leakedSince waits up to within for every goroutine not in base to end,
// and returns the stacks of those that did not.
func leakedSince(base map[string]string, within time.Duration) []string {
	deadline := time.Now().Add(within)
	for {
		var extra []string
		for id, g := range goroutines() {
			if _, ok := base[id]; ok || strings.Contains(g, "goroutines()") || strings.Contains(g, "testing.(*T).Run") {
				continue
			}
			// Process-wide, not per config: Caddy keeps one admin server
			// after Stop (replaced by the next Load), and its log file
			// roller (timberjack) leaves one mill goroutine per log file
			// it ever opened; neither is this module's.
			if strings.Contains(g, "caddy/v2.replaceLocalAdminServer") || strings.Contains(g, "timberjack") {
				continue
			}
			extra = append(extra, g)
		}
		if len(extra) == 0 || time.Now().After(deadline) {
			sort.Strings(extra)
			return extra
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func closeClientConns() {
	client.Transport.(*http.Transport).CloseIdleConnections()
}

// cycle runs one full life: start, traffic, reloads (same account, changed
// options, another account, a rejected config), stop.
func cycle(t *testing.T, f *fakeWeChat) {
	t.Helper()
	g := startCaddy(t, basicConfig(f.URL, ""))
	waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second)
	if n := countStacks("(*Scheduler).loop"); n > 1 {
		t.Errorf("running: %d scheduler goroutines, want at most 1 for all accounts", n)
	}
	port := strings.TrimPrefix(g.URL, "http://127.0.0.1:")
	admin := strings.TrimPrefix(g.Admin, "127.0.0.1:")
	fill := func(cfg string) string {
		return strings.NewReplacer("%[1]d", port, "%[2]d", admin, "%[3]s", g.LogFile).Replace(cfg)
	}
	// Same account, other options: the refresher is kept.
	loadCaddyfile(t, fill(basicConfig(f.URL, "dial_timeout 2s")))
	waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second)
	if n := countStacks("(*Scheduler).loop"); n > 1 {
		t.Errorf("after a reload: %d scheduler goroutines, want at most 1 for all accounts", n)
	}
	// Another account (another secret, so another key): the old one goes.
	loadCaddyfile(t, fill(strings.Replace(basicConfig(f.URL, ""), "{env.TEST_WECHAT_SECRET}", "{env.TEST_WECHAT_SECRET}x", 1)))
	_, _, _ = tryGet(g.URL + "/cgi-bin/user/info") // the fake rejects this secret: any answer is fine
	if n := countStacks("(*Scheduler).loop"); n > 1 {
		t.Errorf("after switching accounts: %d scheduler goroutines, want at most 1 for all accounts", n)
	}
	// A rejected config: a new account provisioned, then the load fails.
	bad := fill(`{
	admin 127.0.0.1:%[2]d
}
http://127.0.0.1:%[1]d {
	handle /a/* {
		wechat {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream ` + f.URL + `
		}
	}
	handle {
		wechat {
			appid {env.TEST_WECHAT_UNSET_FOR_FAILED_RELOAD}
			secret s
			upstream ` + f.URL + `
		}
	}
}
`)
	cfg, err := adaptCaddyfile(bad)
	if err != nil {
		t.Fatal(err)
	}
	if caddy.Load(cfg, true) == nil {
		t.Fatal("a config with an empty appid loaded")
	}
	if n := countStacks("(*Scheduler).loop"); n > 1 {
		t.Errorf("after a rejected reload: %d scheduler goroutines, want at most 1 for all accounts", n)
	}
	resetAccounts(t)
	noAccountsLeft(t)
	if n := countStacks("(*Scheduler).loop"); n != 0 {
		t.Errorf("after stop: %d scheduler goroutines, want 0", n)
	}
}

func TestNoGoroutineLeakStartReloadStop(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	// A first life creates whatever Caddy keeps for the process.
	cycle(t, f)
	closeClientConns()
	f.srv.CloseClientConnections()
	time.Sleep(100 * time.Millisecond)
	base := goroutines()
	before := runtime.NumGoroutine()

	cycle(t, f)
	closeClientConns()
	f.srv.CloseClientConnections()
	if leaked := leakedSince(base, 10*time.Second); len(leaked) > 0 {
		t.Errorf("%d goroutines outlived start/reload/stop (before %d, now %d):\n\n%s",
			len(leaked), before, runtime.NumGoroutine(), strings.Join(leaked, "\n\n"))
	}
}

// Reloads while requests keep taking the slow path (tokens revoked under
// them) must be race-free (run with -race) and lose no request.
func TestReloadUnderLoad(t *testing.T) {
	f, g := setup(t, "")
	waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second)
	port := strings.TrimPrefix(g.URL, "http://127.0.0.1:")
	admin := strings.TrimPrefix(g.Admin, "127.0.0.1:")

	var stop atomic.Bool
	var bad, total, dropped atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; !stop.Load(); j++ {
				if j%10 == 0 && i == 0 {
					f.RevokeAll()
				}
				status, body, err := tryGet(g.URL + "/cgi-bin/user/info?i=" + itoa(i))
				if err != nil {
					// Caddy closes idle keep-alive connections when it
					// swaps servers; a request caught on one is Caddy's,
					// and its retry on a new connection must work.
					dropped.Add(1)
					status, body, err = tryGet(g.URL + "/cgi-bin/user/info?i=" + itoa(i) + "&retry=1")
				}
				total.Add(1)
				if err != nil || status != 200 {
					bad.Add(1)
					t.Logf("status %d err %v body %s", status, err, body)
				}
			}
		}()
	}
	for i := range 10 {
		cfg := strings.NewReplacer("%[1]d", port, "%[2]d", admin, "%[3]s", g.LogFile).
			Replace(basicConfig(f.URL, fmt.Sprintf("fetch_timeout %ds", 5+i)))
		loadCaddyfile(t, cfg)
		time.Sleep(50 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if total.Load() == 0 {
		t.Fatal("no requests ran")
	}
	if bad.Load() != 0 {
		t.Errorf("%d of %d requests failed during reloads", bad.Load(), total.Load())
	}
	// At most one dropped connection per worker and reload.
	if d := dropped.Load(); d > 8*10 {
		t.Errorf("%d requests dropped on closing connections in 10 reloads", d)
	}
	t.Logf("%d requests, %d retried after a dropped connection", total.Load(), dropped.Load())
}

// noAccountsLeft checks, through the status endpoint of a Caddy that runs
// nothing but its admin API, that a stop released every account: one left
// in the process's pool would be a leaked refresher.
func noAccountsLeft(t *testing.T) {
	t.Helper()
	admin := "127.0.0.1:" + itoa(freePort(t))
	if err := caddy.Load([]byte(`{"admin":{"listen":"`+admin+`"}}`), true); err != nil {
		t.Fatal(err)
	}
	defer caddy.Stop()
	if labels := statusAccounts(t, &runningCaddy{Admin: admin}); len(labels) != 0 {
		t.Errorf("accounts %v still in the pool after stop", labels)
	}
}
