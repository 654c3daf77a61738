package storetest

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// The store is trusted for nothing: a value no gateway of the account
// wrote (planted by anyone who can write the store, or an honest one put
// back after its time) is worth no more than an absent one.

// counterSlots mirrors the engine's; planting more slots than it reads
// only makes the attack stronger.
const counterSlots = 8

// beijingDay is the day the engine counts fetches in.
func beijingDay(now time.Time) string {
	return now.In(time.FixedZone("UTC+8", 8*3600)).Format("2006-01-02")
}

// plantedCounters: the fetch counter and the force_refresh counter set to
// a million, under the old key and under every slot, some as plain
// values, some as the store's own counters. The gateway still fetches,
// counts from 1, and may still force_refresh.
func plantedCounters(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIStable)
	a := c.instance(secret)
	cx := ctx(t)
	raw := c.h.Open(t)
	day := beijingDay(c.clock.Now())
	for _, name := range []string{"fetches", "forced"} {
		base := a.shared.Key("access_token") + ":" + name + ":" + day
		keys := []string{base}
		for i := range counterSlots + 2 {
			keys = append(keys, base+":"+strconv.Itoa(i))
		}
		for i, k := range keys {
			if i%2 == 1 {
				// The store's own counter type (a NULL-valued row in SQL,
				// an INCR in Redis), which CompareAndSwap may not match.
				if _, err := raw.Incr(cx, k, 0); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if ok, err := raw.Add(cx, k, []byte("1000000"), 0); err != nil || !ok {
				t.Fatalf("planting %s: %v %v", k, ok, err)
			}
		}
	}
	tok, err := a.tokens.Token(cx)
	if err != nil {
		t.Fatalf("with a planted fetch counter: %v", err)
	}
	if st := a.tokens.Status(); st.Fetches != 1 || st.CeilingReached {
		t.Fatalf("with a planted fetch counter: %d fetches today, ceiling reached %v; want 1, false", st.Fetches, st.CeilingReached)
	}
	// force_refresh: the endpoint keeps returning a token that every call
	// rejects; two failed probes 30 s apart earn one force_refresh.
	c.fake.Break(tok.Value)
	for range 2 {
		if _, _, err := a.tokens.Rejected(cx, tok); err != nil {
			t.Fatal(err)
		}
		c.clock.Advance(31 * time.Second)
	}
	if _, _, err := a.tokens.Rejected(cx, tok); err != nil {
		t.Fatal(err)
	}
	if n := c.fake.Forced.Load(); n != 1 {
		t.Fatalf("with a planted force_refresh counter: %d force_refreshes; want 1", n)
	}
	if st := a.tokens.Status(); st.Forced != 1 {
		t.Fatalf("force_refreshes today: %d; want 1", st.Forced)
	}
	if a.obs.storeErrors.Load() != 0 {
		t.Fatalf("%d store errors: a planted value is not a store failure", a.obs.storeErrors.Load())
	}
}

// plantedLease: a lease with no expiry, garbage or a foreign one, is no
// lease: the first request fetches at once.
func plantedLease(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIStable)
	a := c.instance(secret)
	cx := ctx(t)
	raw := c.h.Open(t)
	lease := a.shared.Key("access_token") + ":lease"
	if ok, err := raw.Add(cx, lease, []byte("planted-lease-no-expiry"), 0); err != nil || !ok {
		t.Fatalf("planting the lease: %v %v", ok, err)
	}
	start := time.Now()
	if _, err := a.tokens.Token(cx); err != nil {
		t.Fatalf("with a planted lease: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second || c.fake.Fetches.Load() != 1 {
		t.Fatalf("with a planted lease: %d fetches after %v; want 1 at once", c.fake.Fetches.Load(), d)
	}
	// The store's own counter type under the lease key (a NULL-valued
	// row in SQL) is taken over too: the instance still takes the lease,
	// so a cluster still fetches once.
	if err := raw.Delete(cx, lease); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Incr(cx, lease, 0); err != nil {
		t.Fatal(err)
	}
	if err := raw.Delete(cx, a.shared.Key("access_token")); err != nil {
		t.Fatal(err)
	}
	a2 := c.instance(secret)
	if _, err := a2.tokens.Token(cx); err != nil {
		t.Fatalf("with a counter planted as the lease: %v", err)
	}
	// Taken over, then released by its new holder: the planted count is
	// gone (an instance that could not replace it would leave it there).
	if _, _, err := raw.Get(cx, lease); err != credential.ErrNotFound {
		t.Fatalf("the planted counter under the lease key was not taken over: %v", err)
	}
	if c.fake.Fetches.Load() != 2 {
		t.Fatalf("with a counter planted as the lease: %d fetches; want 2", c.fake.Fetches.Load())
	}
	// A foreign account's honest lease moved under our key is no lease
	// either: the value is sealed for its own key.
	rec := &recorder{Backend: c.h.Open(t), suffix: ":lease"}
	seal, _ := credential.NewSealer("another-secret-of-a-peer", appid)
	fsh := credential.NewShared(rec, seal, credential.SharedOptions{Prefix: c.prefix, OpTimeout: opTimeout, Now: c.clock.Now})
	ft := credential.New(credential.Config{Source: NewFake(c.clock, credential.APIStable), Shared: fsh, Now: c.clock.Now, FetchTimeout: time.Second})
	defer ft.Close()
	if _, err := ft.Token(cx); err != nil {
		t.Fatal(err)
	}
	if err := raw.Delete(cx, lease); err != nil {
		t.Fatal(err)
	}
	if err := raw.Delete(cx, a.shared.Key("access_token")); err != nil {
		t.Fatal(err)
	}
	if ok, err := raw.Add(cx, lease, rec.last(), 0); err != nil || !ok {
		t.Fatalf("moving the foreign lease: %v %v", ok, err)
	}
	b := c.instance(secret)
	if _, err := b.tokens.Token(cx); err != nil {
		t.Fatalf("with a foreign lease: %v", err)
	}
	if n := c.fake.Fetches.Load(); n != 3 {
		t.Fatalf("with a foreign lease: %d fetches; want 3 (one per attack)", n)
	}
}

// replayedLease: an honest lease of this account, put back after its
// holder released it, has expired by its own content however long the
// store keeps it.
func replayedLease(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIStable)
	cx := ctx(t)
	raw := c.h.Open(t)
	rec := &recorder{Backend: c.h.Open(t), suffix: ":lease"}
	seal, _ := credential.NewSealer(secret, appid)
	sh := credential.NewShared(rec, seal, credential.SharedOptions{Prefix: c.prefix, OpTimeout: opTimeout, Now: c.clock.Now})
	a := credential.New(credential.Config{Source: c.fake, Shared: sh, Now: c.clock.Now, FetchTimeout: time.Second})
	defer a.Close()
	if _, err := a.Token(cx); err != nil {
		t.Fatal(err)
	}
	key := sh.Key("access_token")
	if err := raw.Delete(cx, key); err != nil {
		t.Fatal(err)
	}
	if ok, err := raw.Add(cx, key+":lease", rec.last(), 0); err != nil || !ok {
		t.Fatalf("putting the lease back: %v %v", ok, err)
	}
	c.clock.Advance(10 * time.Second) // past the lease's own expiry (1 s + 2 s) and the 5 s allowed for skew
	b := c.instance(secret)
	start := time.Now()
	if _, err := b.tokens.Token(cx); err != nil {
		t.Fatalf("with a replayed lease: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second || c.fake.Fetches.Load() != 2 {
		t.Fatalf("with a replayed lease: %d fetches after %v; want 2, at once", c.fake.Fetches.Load(), d)
	}
}

// honestDeadHolder: a holder that took the lease and died (its release
// never came) is waited for until its lease's own expiry, no longer, and
// no shorter.
func honestDeadHolder(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIStable)
	cx := ctx(t)
	raw := c.h.Open(t)
	seal, _ := credential.NewSealer(secret, appid)
	dying := &noRelease{Backend: c.h.Open(t)}
	dsh := credential.NewShared(dying, seal, credential.SharedOptions{Prefix: c.prefix, OpTimeout: opTimeout, Now: c.clock.Now})
	hold := make(chan struct{})
	c.fake.Hold.Store(&hold)
	d := credential.New(credential.Config{Source: c.fake, Shared: dsh, Now: c.clock.Now, FetchTimeout: time.Second})
	died := make(chan struct{})
	go func() { _, _ = d.Token(cx); close(died) }()
	lease := dsh.Key("access_token") + ":lease"
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, _, err := raw.Get(cx, lease); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the holder never took the lease")
		}
		time.Sleep(5 * time.Millisecond)
	}
	d.Close() // dies holding the lease
	<-died
	c.fake.Hold.Store(nil)
	b := c.instance(secret)
	done := make(chan error, 1)
	go func() { _, err := b.tokens.Token(cx); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("the waiter did not wait for a live lease: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	c.clock.Advance(3 * time.Second) // the dead holder's lease is over
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("no take-over after the dead holder's lease ended: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting after the dead holder's lease ended")
	}
	if n := c.fake.Fetches.Load(); n != 1 {
		t.Fatalf("%d fetches; want 1", n)
	}
}

// plantedMark: a replay mark no gateway made does not refuse a push,
// nor does an honest one put back after it expired.
func plantedMark(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIStable)
	a, b := c.instance(secret), c.instance(secret)
	cx := ctx(t)
	raw := c.h.Open(t)
	seal, _ := credential.NewSealer(secret, appid)
	markKey := func(name string) string { return a.shared.Key("once:" + seal.Name("once", name)) }
	if ok, err := raw.Add(cx, markKey("push-1"), []byte("planted"), 0); err != nil || !ok {
		t.Fatalf("planting a mark: %v %v", ok, err)
	}
	if _, first, err := a.shared.Remember(cx, "push-1", time.Minute); err != nil || !first {
		t.Fatalf("a planted mark refused a push: first %v, %v", first, err)
	}
	if _, first, err := b.shared.Remember(cx, "push-1", time.Minute); err != nil || first {
		t.Fatalf("an honest mark did not refuse the replay: first %v, %v", first, err)
	}
	// An honest mark, copied, then put back after its time.
	if _, first, err := a.shared.Remember(cx, "push-2", 2*time.Second); err != nil || !first {
		t.Fatal(first, err)
	}
	v, _, err := raw.Get(cx, markKey("push-2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Delete(cx, markKey("push-2")); err != nil {
		t.Fatal(err)
	}
	if ok, err := raw.Add(cx, markKey("push-2"), v, 0); err != nil || !ok {
		t.Fatal(ok, err)
	}
	c.clock.Advance(8 * time.Second) // past its expiry and the 5 s allowed for skew
	if _, first, err := b.shared.Remember(cx, "push-2", 2*time.Second); err != nil || !first {
		t.Fatalf("a mark past its own expiry refused a push: first %v, %v", first, err)
	}
}

// recorder keeps the last value Added under a key with suffix.
type recorder struct {
	credential.Backend
	suffix string
	mu     sync.Mutex
	v      []byte
}

func (r *recorder) Add(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	if len(key) >= len(r.suffix) && key[len(key)-len(r.suffix):] == r.suffix {
		r.mu.Lock()
		r.v = append([]byte(nil), v...)
		r.mu.Unlock()
	}
	return r.Backend.Add(ctx, key, v, ttl)
}

func (r *recorder) last() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.v
}

// noRelease is an instance that dies holding its lease: its release
// never reaches the store.
type noRelease struct{ credential.Backend }

func (n *noRelease) DeleteIf(ctx context.Context, key string, v []byte) error { return nil }

// replayedToken: an honest sealed token of the account, revoked since,
// put back under its key after a newer one was stored. An instance that
// has seen the newer one does not adopt it when its token is rejected:
// the replay goes out with a token WeChat accepts.
func replayedToken(t *testing.T, h Harness) {
	c := newCluster(t, h, credential.APIClassic)
	a := c.instance(secret)
	cx := ctx(t)
	raw := c.h.Open(t)
	key := a.shared.Key("access_token")
	t1, err := a.tokens.Token(cx)
	if err != nil {
		t.Fatal(err)
	}
	old, _, err := raw.Get(cx, key)
	if err != nil {
		t.Fatal(err)
	}
	c.clock.Advance(3 * time.Minute)
	c.fake.Revoke(t1.Value)
	t2, _, err := a.tokens.Rejected(cx, t1)
	if err != nil || t2.Value == t1.Value {
		t.Fatalf("first rejection: %v", err)
	}
	// WeChat revokes t2 too (a force_refresh elsewhere); the attacker
	// puts t1 back.
	c.clock.Advance(3 * time.Minute)
	c.fake.Revoke(t2.Value)
	if err := raw.Delete(cx, key); err != nil {
		t.Fatal(err)
	}
	if ok, err := raw.Add(cx, key, old, time.Hour); err != nil || !ok {
		t.Fatal(ok, err)
	}
	t3, replay, err := a.tokens.Rejected(cx, t2)
	if err != nil || !replay {
		t.Fatalf("second rejection: replay %v, %v", replay, err)
	}
	if t3.Value == t1.Value || !c.fake.Valid(t3.Value) {
		t.Fatal("adopted a revoked token put back in the store; the replay fails")
	}
}
