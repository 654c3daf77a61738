package credential_test

import (
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memstore"
	"github.com/caddy-wechat/wechat/internal/credential/storetest"
)

// Spread places the first renewal of a cache's first fetched token at a
// random point of its life; later renewals, and a first token adopted
// from the store, use the normal window.
func TestSpreadFirstFetchedTokenOnly(t *testing.T) {
	clock := storetest.NewClock()
	fake := storetest.NewFake(clock, credential.APIClassic)
	half := func() float64 { return 0.5 }
	st := memstore.New()
	st.Now = clock.Now
	seal, _ := credential.NewSealer(testSecret, "wxspread")
	mk := func() *credential.Cache {
		sh := credential.NewShared(st.Open(), seal, credential.SharedOptions{Now: clock.Now})
		return credential.New(credential.Config{Source: fake, Shared: sh, Now: clock.Now, Rand: half, Window: credential.AuthorizerWindow, Spread: true, PeekInterval: -1})
	}
	a := mk()
	tok, err := a.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Normal: expiry − (2 + 0.5×6) min = +115 min; spread: half of that.
	if got := a.RenewAt().Sub(tok.FetchedAt); got != 115*time.Minute/2 {
		t.Fatalf("first renewal at +%s, want +57.5m", got)
	}
	b := mk() // a peer: adopts the stored token, keeps its phase
	if _, err := b.Token(ctx); err != nil {
		t.Fatal(err)
	}
	if got := b.RenewAt().Sub(tok.FetchedAt); got != 115*time.Minute {
		t.Fatalf("adopted token renews at +%s, want +115m", got)
	}
	clock.Advance(58 * time.Minute)
	a.Tick()
	next := a.Current()
	if next == tok || a.RenewAt().Sub(next.FetchedAt) != 115*time.Minute {
		t.Fatalf("second renewal at +%s, want the normal +115m", a.RenewAt().Sub(next.FetchedAt))
	}
	if fake.Fetches.Load() != 2 {
		t.Fatalf("fetches = %d", fake.Fetches.Load())
	}
}

// PeekInterval < 0: no store read per cache per minute.
func TestPeekIntervalNever(t *testing.T) {
	for _, peek := range []time.Duration{0, -1} {
		clock := storetest.NewClock()
		st := memstore.New()
		st.Now = clock.Now
		seal, _ := credential.NewSealer(testSecret, "wxpeek")
		sh := credential.NewShared(st.Open(), seal, credential.SharedOptions{Now: clock.Now})
		sched := credential.NewScheduler(clock.Now)
		c := credential.New(credential.Config{Source: storetest.NewFake(clock, credential.APIStable), Shared: sh, Scheduler: sched,
			Now: clock.Now, PeekInterval: peek})
		if _, err := c.Token(ctx); err != nil {
			t.Fatal(err)
		}
		before := st.Ops()
		for range 10 {
			clock.Advance(time.Minute)
			sched.Settle()
		}
		reads := st.Ops() - before
		if peek < 0 && reads != 0 || peek == 0 && reads < 10 {
			t.Fatalf("PeekInterval %s: %d store operations in 10 min", peek, reads)
		}
		c.Close()
	}
}
