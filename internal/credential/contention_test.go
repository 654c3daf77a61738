package credential_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memstore"
	"github.com/caddy-wechat/wechat/internal/credential/storetest"
	"github.com/caddyserver/certmagic"
)

// countingObs counts store errors.
type countingObs struct{ storeErrors int }

func (*countingObs) Fetched(string, bool, error) {}
func (o *countingObs) StoreError(string)         { o.storeErrors++ }
func (*countingObs) CeilingReached(string)       {}

// A peer (another process) holds the file lock of a key for 1.5 s, far
// longer than a store call's timeout: the write waits for it and
// succeeds, no store error is counted and the breaker stays closed. One
// that holds it past LockWait gets ErrBusy: still no store error, no
// breaker. certmagic's own poll is 1 s; ours is 100 ms, so the write
// lands soon after the peer lets go.
func TestStoragePeerLockIsNotAnOutage(t *testing.T) {
	overlapIfFast(t)
	dir := t.TempDir()
	peer := &certmagic.FileStorage{Path: dir}
	st := credential.NewStorage(&certmagic.FileStorage{Path: dir}, "wechat/")
	seal, _ := credential.NewSealer(testSecret, "wxunit")
	obs := &countingObs{}
	sh := credential.NewShared(st, seal, credential.SharedOptions{OpTimeout: 200 * time.Millisecond, Observer: obs})
	key := sh.Key("access_token")
	path := "wechat/" + escapeForTest(key)
	ctx := context.Background()
	if err := peer.Lock(ctx, path); err != nil {
		t.Fatal(err)
	}
	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(1500 * time.Millisecond)
		released <- time.Now()
		_ = peer.Unlock(ctx, path)
	}()
	tok := credential.NewToken("T1", 7200, time.Now(), "fetch")
	if got := sh.Store(ctx, "access_token", tok); got.Value != "T1" {
		t.Fatalf("Store returned %q", got.Value)
	}
	done := time.Now()
	at := <-released
	if done.Before(at) {
		t.Fatal("the write did not wait for the peer's lock")
	}
	if lag := done.Sub(at); lag > 600*time.Millisecond {
		t.Errorf("the write landed %v after the peer let go; want about one 100 ms poll", lag)
	}
	if obs.storeErrors != 0 || sh.BreakerOpen() {
		t.Fatalf("a peer's lock counted %d store errors, breaker open %v; want 0, closed", obs.storeErrors, sh.BreakerOpen())
	}
	if got := sh.Load(ctx, "access_token"); got == nil || got.Value != "T1" {
		t.Fatal("the write did not land")
	}

	// Held past LockWait: ErrBusy, which is contention, not failure.
	st.SetLockWait(300 * time.Millisecond)
	if err := peer.Lock(ctx, path); err != nil {
		t.Fatal(err)
	}
	defer peer.Unlock(ctx, path)
	err := sh.Do(ctx, "cas", func(ctx context.Context) error {
		_, err := st.Add(ctx, key, []byte("x"), time.Minute)
		return err
	})
	if !errors.Is(err, credential.ErrBusy) {
		t.Fatalf("a write under a peer's lock past LockWait: %v; want ErrBusy", err)
	}
	if obs.storeErrors != 0 || sh.BreakerOpen() {
		t.Fatalf("ErrBusy counted %d store errors, breaker open %v; want 0, closed", obs.storeErrors, sh.BreakerOpen())
	}
}

// escapeForTest is the storage's key escaping (storage_unit_test.go
// checks it byte by byte).
func escapeForTest(key string) string {
	const hex = "0123456789ABCDEF"
	var b []byte
	for i := 0; i < len(key); i++ {
		c := key[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	return string(b)
}

// An authentic lease that claims to hold far longer than an honest one
// lives (a peer whose clock runs an hour ahead) is honoured no longer
// than this instance's own lease would live: fetch_timeout + 2 s.
func TestWaiterBoundsASkewedLease(t *testing.T) {
	clock := storetest.NewClock()
	store := memstore.New()
	store.Now = clock.Now
	seal, _ := credential.NewSealer(testSecret, "wxunit")
	sh := credential.NewShared(store.Open(), seal, credential.SharedOptions{Now: clock.Now})
	fake := storetest.NewFake(clock, credential.APIClassic)
	const ft = time.Second
	c := credential.New(credential.Config{Source: fake, Now: clock.Now, Shared: sh, FetchTimeout: ft})
	defer c.Close()
	lease := sh.Key("access_token") + ":lease"
	ctx := context.Background()
	if ok, err := store.Open().Add(ctx, lease, sh.SealClaim(lease, clock.Now().Add(time.Hour)), 0); !ok || err != nil {
		t.Fatal(ok, err)
	}
	done := make(chan error, 1)
	go func() { _, err := c.Token(ctx); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("a live lease was not waited for: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	clock.Advance(ft + 2*time.Second) // this instance's honest lease is over
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("still waiting for a lease that claims an hour")
	}
	if fake.Fetches.Load() != 1 {
		t.Fatalf("%d fetches", fake.Fetches.Load())
	}
}
