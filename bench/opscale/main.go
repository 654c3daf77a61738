// Command opscale gives the open platform's scale figures (issue 13):
// N authorizers of one component against the fake WeChat's open platform
// over loopback HTTP, with simulated time for the renewals. Run it from
// the module root:
//
//	go run ./bench/opscale -n 10000 -hours 8
//
// It prints memory per authorizer, heap and RSS, goroutines, renewals per
// simulated minute (cold fill, largest minute after it, steady state) and
// the warm lookup's cost.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/fakewechat"
	"github.com/caddy-wechat/wechat/internal/credential"
)

// clock is simulated time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func rss() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "n/a"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:"))
		}
	}
	return "n/a"
}

func main() {
	n := flag.Int("n", 10000, "authorizers")
	hours := flag.Int("hours", 8, "simulated hours of renewals")
	flag.Parse()
	const appid, secret = "wxcomponentbench01", "component-bench-secret-0123456789"
	clk := &clock{t: time.Now()}
	fake := fakewechat.New(fakewechat.Options{Now: clk.Now, Component: fakewechat.ComponentOptions{AppID: appid, Secret: secret}})
	srv := httptest.NewServer(fake)
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	bases := []*url.URL{base}
	sched := credential.NewScheduler(clk.Now)
	comp := credential.New(credential.Config{Name: "component_access_token", Scheduler: sched, Window: credential.ComponentWindow, Now: clk.Now,
		Source: &credential.ComponentTokenSource{Bases: bases, AppID: appid, Secret: secret, Now: clk.Now}})
	plat := &credential.Platform{Component: comp, Bases: bases, AppID: appid, Secret: secret, Now: clk.Now}
	reg := credential.NewRegistry(plat, credential.RegistryConfig{Scheduler: sched, Now: clk.Now, Ceiling: -1})
	ctx := context.Background()
	push := func() {
		_ = comp.Aux().Put(ctx, credential.AuxVerifyTicket, []byte(fake.NewTicket()))
		comp.ClearBackoff()
	}
	push()
	if _, err := comp.Token(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "component token:", err)
		os.Exit(1)
	}
	creds := fake.AddAuthorizers(*n)
	settle := func() {
		sched.Kick()
		for !sched.Idle() {
			time.Sleep(200 * time.Microsecond)
			sched.Kick()
		}
	}

	g0, h0, r0 := runtime.NumGoroutine(), heap(), rss()
	for _, c := range creds {
		if err := reg.Authorize(ctx, &credential.Authorization{AuthorizerAppID: c.AppID, RefreshToken: c.RefreshToken}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	// Cold fill: every authorizer's first call in the same minute.
	start := time.Now()
	for _, c := range creds {
		if _, _, err := reg.Token(ctx, c.AppID); err != nil {
			fmt.Fprintln(os.Stderr, c.AppID, err)
			os.Exit(1)
		}
	}
	fill := time.Since(start)
	h1 := heap()
	fmt.Printf("authorizers            %d\n", *n)
	fmt.Printf("memory per authorizer  %d bytes (heap %.1f → %.1f MiB, includes the in-process fake's %d tokens)\n",
		(h1-h0)/uint64(*n), float64(h0)/(1<<20), float64(h1)/(1<<20), *n)
	fmt.Printf("RSS                    %s → %s\n", r0, rss())
	fmt.Printf("goroutines             %d → %d (scheduled caches: %d)\n", g0, runtime.NumGoroutine(), sched.Len())
	fmt.Printf("cold fill              %d api_authorizer_token calls in %s (real time)\n", fake.Fetches("api_authorizer_token"), fill.Round(time.Millisecond))

	minutes := *hours * 60
	last := fake.Fetches("api_authorizer_token")
	var burst, steady, steadyMax int
	for m := 1; m <= minutes; m++ {
		clk.Advance(time.Minute)
		if m%10 == 0 {
			push()
		}
		settle()
		now := fake.Fetches("api_authorizer_token")
		d := now - last
		last = now
		burst = max(burst, d)
		if m > 120 {
			steady += d
			steadyMax = max(steadyMax, d)
		}
	}
	if minutes > 120 {
		fmt.Printf("renewals               largest simulated minute after the fill %d; steady state (min 120–%d) mean %.1f/min, max %d/min; ideal %d/115 min = %.1f/min\n",
			burst, minutes, float64(steady)/float64(minutes-120), steadyMax, *n, float64(*n)/115)
	}
	fmt.Printf("goroutines after       %d\n", runtime.NumGoroutine())

	ids := make([]string, len(creds))
	for i, c := range creds {
		ids[i] = c.AppID
	}
	res := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			a := reg.Lookup(ids[i%len(ids)])
			if _, err := a.Cache().Token(ctx); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	fmt.Printf("warm lookup            %d ns/op, %d allocs/op (lookup + token, cycling over all authorizers; simulated clock)\n",
		res.NsPerOp(), res.AllocsPerOp())
	reg.Close()
	comp.Close()
}
