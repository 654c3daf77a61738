package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// Harness describes a store under test.
type Harness struct {
	// Open connects a new client, as a new gateway instance would, to the store under test; all Opens of one Harness see the same data.
	Open func(t *testing.T) credential.Backend
	// Pause black-holes the server (SIGSTOP: connections hang); Resume undoes it. Kill stops it (connections refused); Restart starts it again on the same address.
	Pause, Resume, Kill, Restart func(t *testing.T)
	// Durable: data survives Kill/Restart.
	Durable bool
}

const (
	appid  = "wxconformance"
	secret = "conformance-secret-0123456789abcdef"
	// Generous for a loopback server, because CI runs the suite under
	// -race on two cores: a slow call past it opens the breaker, and the
	// instance fetches locally, which these counts would read as a
	// protocol failure.
	opTimeout = time.Second
)

// Run runs the conformance suite against h.
func Run(t *testing.T, h Harness) {
	t.Run("ColdStampede", func(t *testing.T) { coldStampede(t, h) })
	t.Run("RejectionStorm", func(t *testing.T) { rejectionStorm(t, h) })
	t.Run("NewerWins", func(t *testing.T) { newerWins(t, h) })
	t.Run("LeaseHolderDies", func(t *testing.T) { leaseTakeover(t, h) })
	t.Run("RecheckAfterLease", func(t *testing.T) { recheckAfterLease(t, h) })
	t.Run("CorruptOrForeignIsMiss", func(t *testing.T) { corruptOrForeign(t, h) })
	t.Run("CountersShared", func(t *testing.T) { countersShared(t, h) })
	t.Run("PlantedCountersIgnored", func(t *testing.T) { plantedCounters(t, h) })
	t.Run("PlantedLeaseIgnored", func(t *testing.T) { plantedLease(t, h) })
	t.Run("ReplayedLeaseIgnored", func(t *testing.T) { replayedLease(t, h) })
	t.Run("HonestDeadHolder", func(t *testing.T) { honestDeadHolder(t, h) })
	t.Run("PlantedMarkIgnored", func(t *testing.T) { plantedMark(t, h) })
	t.Run("ReplayedTokenNotAdopted", func(t *testing.T) { replayedToken(t, h) })
	t.Run("TicketsShared", func(t *testing.T) { ticketsShared(t, h) })
	t.Run("StoreDown", func(t *testing.T) { storeDown(t, h, h.Kill, h.Restart) })
	t.Run("StoreBlackHoled", func(t *testing.T) { storeDown(t, h, h.Pause, h.Resume) })
	if h.Durable {
		t.Run("DurableRestart", func(t *testing.T) { durableRestart(t, h) })
	}
}

// cluster is a set of instances that share one store, one fake WeChat and
// one clock, under a key prefix of their own.
type cluster struct {
	t      *testing.T
	h      Harness
	clock  *Clock
	fake   *Fake
	prefix string
}

func newCluster(t *testing.T, h Harness, api string) *cluster {
	var b [6]byte
	_, _ = rand.Read(b[:])
	clock := NewClock()
	return &cluster{t: t, h: h, clock: clock, fake: NewFake(clock, api), prefix: "t" + hex.EncodeToString(b[:]) + ":"}
}

type instance struct {
	shared *credential.Shared
	tokens *credential.Cache
	obs    *counter
}

// counter is an Observer that counts store errors.
type counter struct{ storeErrors atomic.Int64 }

func (*counter) Fetched(string, bool, error) {}
func (c *counter) StoreError(string)         { c.storeErrors.Add(1) }
func (*counter) CeilingReached(string)       {}

func (c *cluster) instance(sec string) *instance {
	seal, err := credential.NewSealer(sec, appid)
	if err != nil {
		c.t.Fatal(err)
	}
	obs := &counter{}
	sh := credential.NewShared(c.h.Open(c.t), seal, credential.SharedOptions{
		Prefix: c.prefix, OpTimeout: opTimeout, Now: c.clock.Now, Observer: obs, Durable: c.h.Durable,
	})
	tok := credential.New(credential.Config{
		Source: c.fake, Shared: sh, Now: c.clock.Now, FetchTimeout: time.Second, MinAge: -1, Observer: obs,
	})
	c.t.Cleanup(func() { tok.Close(); sh.Close() })
	return &instance{shared: sh, tokens: tok, obs: obs}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// parallel runs n calls of f on each instance at once and returns the
// distinct values they got.
func parallel(t *testing.T, n int, insts []*instance, f func(*instance) (*credential.Token, error)) map[string]int {
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, in := range insts {
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				tok, err := f(in)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("call failed: %v", err)
					return
				}
				got[tok.Value]++
			}()
		}
	}
	close(start)
	wg.Wait()
	return got
}

func coldStampede(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIStable)
	insts := []*instance{c.instance(secret), c.instance(secret), c.instance(secret)}
	cx := ctx(t)
	got := parallel(t, 150, insts, func(in *instance) (*credential.Token, error) { return in.tokens.Token(cx) })
	if n := c.fake.Fetches.Load(); n != 1 || len(got) != 1 {
		t.Fatalf("3 × 150 cold requests: %d fetches, %d distinct tokens; want 1 and 1", n, len(got))
	}
}

func rejectionStorm(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIClassic)
	a, b := c.instance(secret), c.instance(secret)
	cx := ctx(t)
	t1, err := a.tokens.Token(cx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.tokens.Token(cx); err != nil {
		t.Fatal(err)
	}
	c.clock.Advance(2 * time.Minute)
	c.fake.Revoke(t1.Value)
	got := parallel(t, 100, []*instance{a, b}, func(in *instance) (*credential.Token, error) {
		fresh, _, err := in.tokens.Rejected(cx, t1)
		return fresh, err
	})
	if n := c.fake.Fetches.Load(); n != 2 || len(got) != 1 {
		t.Fatalf("2 × 100 rejections: %d fetches in all, %d distinct tokens; want 2 (1 + 1) and 1", n, len(got))
	}
	if _, ok := got[t1.Value]; ok {
		t.Fatal("the storm kept the revoked token")
	}
}

func newerWins(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIStable)
	a, b := c.instance(secret), c.instance(secret)
	cx := ctx(t)
	now := c.clock.Now()
	older := credential.NewToken("OLDER", 7200, now.Add(-time.Minute), "fetch")
	newer := credential.NewToken("NEWER", 7200, now, "fetch")
	if got := a.shared.Store(cx, "access_token", newer); got.Value != "NEWER" {
		t.Fatalf("storing into an empty store returned %q", got.Value)
	}
	if got := b.shared.Store(cx, "access_token", older); got.Value != "NEWER" {
		t.Fatalf("storing an older token returned %q; want the newer one back", got.Value)
	}
	if got := a.shared.Load(cx, "access_token"); got == nil || got.Value != "NEWER" {
		t.Fatal("an older token overwrote a newer one")
	}
	// A refresher adopts a peer's newer token, never an older one.
	if !b.tokens.Warm(cx) || b.tokens.Current().Value != "NEWER" {
		t.Fatal("warm did not adopt the stored token")
	}
}

func leaseTakeover(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIStable)
	a := c.instance(secret)
	cx := ctx(t)
	// A holder that died: its lease is there, its value never comes.
	b := c.h.Open(t)
	defer b.Close()
	if ok, err := b.Add(cx, a.shared.Key("access_token")+":lease", []byte("dead-instance"), time.Second); err != nil || !ok {
		t.Fatalf("planting a lease: %v %v", ok, err)
	}
	tok, err := a.tokens.Token(cx)
	if err != nil {
		t.Fatalf("waiting on a dead lease holder: %v", err)
	}
	if n := c.fake.Fetches.Load(); n != 1 || tok == nil {
		t.Fatalf("%d fetches after a lease holder died; want 1", n)
	}
}

func corruptOrForeign(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIStable)
	cx := ctx(t)
	foreign := c.instance("another-secret-of-a-peer")
	ft, err := foreign.tokens.Token(cx)
	if err != nil {
		t.Fatal(err)
	}
	a := c.instance(secret)
	key := a.shared.Key("access_token")
	raw := c.h.Open(t)
	defer raw.Close()
	// A foreign value moved under our key.
	v, _, err := raw.Get(cx, foreign.shared.Key("access_token"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Add(cx, key, v, time.Hour); err != nil {
		t.Fatal(err)
	}
	if a.tokens.Warm(cx) {
		t.Fatal("adopted a value sealed under another secret")
	}
	tok, err := a.tokens.Token(cx)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Source != "fetch" || c.fake.Fetches.Load() != 2 {
		t.Fatalf("a foreign value was not a miss: source %q, %d fetches", tok.Source, c.fake.Fetches.Load())
	}
	_ = ft
	// Garbage is a miss too.
	b := c.instance(secret)
	if err := raw.Delete(cx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Add(cx, key, []byte("w1 1 99999999999999999 PLANTED"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if b.tokens.Warm(cx) {
		t.Fatal("adopted a corrupt value")
	}
}

func countersShared(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIClassic)
	a, b := c.instance(secret), c.instance(secret)
	cx := ctx(t)
	t1, err := a.tokens.Token(cx)
	if err != nil {
		t.Fatal(err)
	}
	c.fake.Revoke(t1.Value)
	b.tokens.Warm(cx)
	if _, _, err := b.tokens.Rejected(cx, t1); err != nil {
		t.Fatal(err)
	}
	if f := b.tokens.Status().Fetches; f != 2 {
		t.Fatalf("instance b counts %d fetches today; want the cluster's 2", f)
	}
}

func ticketsShared(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIStable)
	var tickets []*instance
	var srcs []*Tickets
	for range 3 {
		in := c.instance(secret)
		src := &Tickets{Tokens: in.tokens, Clock: c.clock}
		srcs = append(srcs, src)
		tc := credential.New(credential.Config{Name: "ticket:jsapi", Source: src, Shared: in.shared, Now: c.clock.Now,
			FetchTimeout: time.Second, Window: credential.ClassicWindow})
		t.Cleanup(func() { tc.Close() })
		tickets = append(tickets, &instance{shared: in.shared, tokens: tc})
	}
	cx := ctx(t)
	got := parallel(t, 50, tickets, func(in *instance) (*credential.Token, error) { return in.tokens.Token(cx) })
	var n int64
	for _, s := range srcs {
		n += s.Fetches.Load()
	}
	if n != 1 || len(got) != 1 || c.fake.Fetches.Load() != 1 {
		t.Fatalf("3 × 50 ticket requests: %d ticket fetches, %d token fetches, %d distinct tickets; want 1, 1, 1", n, c.fake.Fetches.Load(), len(got))
	}
}

// storeDown: requests go on with at most one short timeout, and the
// store is used again by itself once it is back.
func storeDown(t *testing.T, h Harness, down, up func(*testing.T)) {
	if down == nil || up == nil {
		t.Skip("this store has no server to stop (a local file system)")
	}
	c := newCluster(t, h, credential.APIClassic)
	a := c.instance(secret)
	cx := ctx(t)
	down(t)
	upped := false
	defer func() {
		if !upped {
			up(t)
		}
	}()
	for range 20 {
		tok, err := a.tokens.Token(cx)
		if err != nil {
			t.Fatalf("with the store down: %v", err)
		}
		c.fake.Revoke(tok.Value)
		if _, _, err := a.tokens.Rejected(cx, tok); err != nil {
			t.Fatalf("with the store down: %v", err)
		}
	}
	if n := a.obs.storeErrors.Load(); n != 1 {
		t.Fatalf("%d store errors with the store down; want exactly 1 (then the breaker skips it)", n)
	}
	up(t)
	upped = true
	c.clock.Advance(6 * time.Second) // past the breaker's cool-off
	before := a.shared.Ops()
	deadline := time.Now().Add(10 * time.Second)
	for a.shared.BreakerOpen() || a.shared.Ops() == before {
		// A restarted server may refuse for a moment: the breaker's probe
		// fails, then succeeds after another cool-off.
		tok, err := a.tokens.Token(cx)
		if err != nil {
			t.Fatal(err)
		}
		c.fake.Revoke(tok.Value)
		if _, _, err := a.tokens.Rejected(cx, tok); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the store was not used again after it came back")
		}
		c.clock.Advance(6 * time.Second)
	}
	if got := a.shared.Load(cx, "access_token"); got == nil {
		t.Fatal("nothing stored after recovery")
	}
}

func durableRestart(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIStable)
	a := c.instance(secret)
	cx := ctx(t)
	if _, err := a.tokens.Token(cx); err != nil {
		t.Fatal(err)
	}
	// A store with no server of its own (a shared file system) has
	// nothing to restart: the gateway instances below are new all the same.
	if h.Kill != nil && h.Restart != nil {
		h.Kill(t)
		h.Restart(t)
	}
	for range 3 {
		in := c.instance(secret)
		if !in.tokens.Warm(cx) {
			t.Fatal("a restarted instance found no token in a durable store")
		}
		if _, err := in.tokens.Token(cx); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.fake.Fetches.Load(); n != 1 {
		t.Fatalf("a restarted cluster made %d more fetches; want 0", n-1)
	}
}

// hooked runs before once, just before the first Add of a lease key.
type hooked struct {
	credential.Backend
	once   sync.Once
	before func()
}

func (b *hooked) Add(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	if strings.HasSuffix(key, ":lease") {
		b.once.Do(b.before)
	}
	return b.Backend.Add(ctx, key, v, ttl)
}

// recheckAfterLease: a peer stores a token between our read and our
// lease; we must find it after taking the lease, not fetch over it.
func recheckAfterLease(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIStable)
	peer := c.instance(secret)
	cx := ctx(t)
	peerTok := credential.NewToken("PEER-TOKEN", 7200, c.clock.Now(), "fetch")
	seal, _ := credential.NewSealer(secret, appid)
	hb := &hooked{Backend: c.h.Open(t), before: func() { peer.shared.Store(cx, "access_token", peerTok) }}
	sh := credential.NewShared(hb, seal, credential.SharedOptions{Prefix: c.prefix, OpTimeout: opTimeout, Now: c.clock.Now})
	a := credential.New(credential.Config{Source: c.fake, Shared: sh, Now: c.clock.Now, FetchTimeout: time.Second})
	defer a.Close()
	tok, err := a.Token(cx)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Value != "PEER-TOKEN" || c.fake.Fetches.Load() != 0 {
		t.Fatalf("got %q with %d fetches; want the peer's token and no fetch", tok.Value, c.fake.Fetches.Load())
	}
}
