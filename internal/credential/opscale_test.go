package credential_test

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// scaleN is the number of authorizers of the scale figures:
// WECHAT_SCALE=10000 go test -run TestOpenPlatformScale -v ./internal/credential
func scaleN(t testing.TB) int {
	n, _ := strconv.Atoi(os.Getenv("WECHAT_SCALE"))
	if n <= 0 {
		if testing.Short() {
			t.Skip("set WECHAT_SCALE")
		}
		return 1000 // a quick run by default; the figures use 10,000
	}
	return n
}

func heapNow() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestOpenPlatformScale measures, for N authorizers in one process:
// memory per authorizer, goroutines, renewals per minute on a fake clock
// (cold fill, then steady state), and checks the spread.
func TestOpenPlatformScale(t *testing.T) {
	n := scaleN(t)
	e := newOpEnv(t, false)
	nd := e.node()
	e.push(t, nd)
	if _, err := nd.comp.Token(ctx); err != nil {
		t.Fatal(err)
	}
	ids, refresh := e.fake.AddAuthorizers(n)

	// Memory: entries with a refresh token and a token, as after the
	// authorized events, without the fake's own bookkeeping.
	g0 := runtime.NumGoroutine()
	h0 := heapNow()
	for i, id := range ids {
		tok := credential.NewToken(("authorizertoken-" + id + strings.Repeat("x", 136))[:136], 7200, e.clock.Now(), "fetch")
		if err := nd.reg.Authorize(ctx, &credential.Authorization{AuthorizerAppID: id, RefreshToken: refresh[i], Token: tok}); err != nil {
			t.Fatal(err)
		}
	}
	h1 := heapNow()
	g1 := runtime.NumGoroutine()
	t.Logf("memory: %d authorizers, %d bytes each (heap %.1f MiB → %.1f MiB); goroutines %d → %d; scheduled %d",
		n, (h1-h0)/uint64(n), float64(h0)/(1<<20), float64(h1)/(1<<20), g0, g1, nd.sched.Len())
	if g1-g0 > 2 {
		t.Fatalf("goroutines grew by %d with %d authorizers", g1-g0, n)
	}
	if per := (h1 - h0) / uint64(n); per > 4096 {
		t.Fatalf("%d bytes per authorizer", per)
	}
	nd.reg.Close()

	// Renewals: a cold start where every authorizer is used in the same
	// minute (the worst burst), then 8 hours on the fake clock.
	e2 := newOpEnv(t, false)
	nd = e2.node()
	e2.push(t, nd)
	ids, _ = e2.fake.AddAuthorizers(n)
	e2.seed(t, nd, ids)
	for _, id := range ids {
		if _, _, err := nd.reg.Token(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	cold := e2.fake.AuthorizerFetches.Load()
	const minutes = 480
	perMin := make([]int64, minutes+1)
	last := cold
	for m := 1; m <= minutes; m++ {
		e2.clock.Advance(time.Minute)
		if m%10 == 0 {
			e2.push(t, nd)
		}
		nd.sched.Settle()
		now := e2.fake.AuthorizerFetches.Load()
		perMin[m], last = now-last, now
	}
	var burst, steady, steadyMax int64
	for m := 1; m <= minutes; m++ {
		burst = max(burst, perMin[m])
		if m > 120 {
			steady += perMin[m]
			steadyMax = max(steadyMax, perMin[m])
		}
	}
	mean := float64(steady) / float64(minutes-120)
	ideal := float64(n) / 115
	t.Logf("renewals: cold fill %d in minute 0; largest minute after it %d; steady state (min 120–480) mean %.1f/min, max %d/min (ideal %d/115 min = %.1f/min); goroutines %d",
		cold, burst, mean, steadyMax, n, ideal, runtime.NumGoroutine())
	if mean < 0.85*ideal || mean > 1.15*ideal {
		t.Fatalf("steady state %.1f/min, want about %.1f", mean, ideal)
	}
	if float64(burst) > 2.5*ideal+10 {
		t.Fatalf("a minute with %d renewals: not spread", burst)
	}
	if e2.fake.InfoCalls.Load() != 0 || nd.obs.renewFailed.Load() != 0 {
		t.Fatal("renewal failures")
	}
}

// BenchmarkAuthorizerLookup is the warm path of a call on behalf of one
// of 10,000 authorizers, on the real clock: registry lookup and token
// load, cycling through all of them (cache misses included).
func BenchmarkAuthorizerLookup(b *testing.B) {
	reg := credential.NewRegistry(&credential.Platform{}, credential.RegistryConfig{})
	defer reg.Close()
	const n = 10000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("wxa%015d", i)
		tok := credential.NewToken("tok"+ids[i], 7200, time.Now(), "store")
		if err := reg.Authorize(ctx, &credential.Authorization{AuthorizerAppID: ids[i], RefreshToken: "r" + ids[i], Token: tok}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("cycle10000", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := reg.Lookup(ids[i%n]).Cache().Token(ctx); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	// The same token load without the registry, for scale on a busy
	// machine: the difference is the lookup.
	b.Run("cache_only", func(b *testing.B) {
		c := reg.Lookup(ids[4321]).Cache()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Token(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("one", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := reg.Lookup(ids[4321]).Cache().Token(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
