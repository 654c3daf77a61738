package credential_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/storetest"
)

// 10,000 caches (the open platform's authorizers) on one scheduler: the
// goroutine count does not grow with them, and a warm lookup in any of
// them allocates nothing.
func TestTenThousandCaches(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	clock := storetest.NewClock()
	fake := storetest.NewFake(clock, credential.APIStable) // one token for all: the fake stays small
	s := credential.NewScheduler(clock.Now)
	ctx := context.Background()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	caches := make([]*credential.Cache, 10000)
	for i := range caches {
		caches[i] = credential.New(credential.Config{Source: fake, Now: clock.Now, Scheduler: s, Window: credential.ClassicWindow})
		if _, err := caches[i].Token(ctx); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if g := runtime.NumGoroutine() - g0; g > 1 {
		t.Fatalf("10,000 caches added %d goroutines", g)
	}
	t.Logf("heap per cache with a token: %d bytes", (after.HeapAlloc-before.HeapAlloc)/10000)
	if n := testing.AllocsPerRun(1000, func() { _, _ = caches[7777].Token(ctx) }); n != 0 {
		t.Fatalf("warm lookup allocates %v", n)
	}
	for _, c := range caches {
		c.Close()
	}
}
