package credential_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memstore"
)

// racingCAS is a backend on which a peer writes its own honest claim
// between our read of a planted value and our CompareAndSwap over it
// (or on which the swap fails outright, when fail is set).
type racingCAS struct {
	credential.Backend
	peer  func() []byte
	fail  error
	calls map[string]int
}

func (b *racingCAS) Add(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	b.calls["add"]++
	return b.Backend.Add(ctx, key, v, ttl)
}

func (b *racingCAS) Get(ctx context.Context, key string) ([]byte, credential.Version, error) {
	b.calls["get"]++
	return b.Backend.Get(ctx, key)
}

func (b *racingCAS) CompareAndSwap(ctx context.Context, key string, ver credential.Version, v []byte, ttl time.Duration) (bool, error) {
	b.calls["cas"]++
	if b.fail != nil {
		return false, b.fail
	}
	if b.peer != nil {
		if _, cur, err := b.Backend.Get(ctx, key); err == nil {
			if ok, err := b.Backend.CompareAndSwap(ctx, key, cur, b.peer(), time.Minute); err != nil || !ok {
				panic("the peer's write did not land")
			}
		}
	}
	return b.Backend.CompareAndSwap(ctx, key, ver, v, ttl)
}

// A claim whose swap over a planted value loses to a peer reads the
// peer's claim and reports when it ends, so that the caller waits for
// the peer rather than polling blind; a swap that fails is a store
// error, answered at once without more store calls.
func TestClaimLostToPeerReportsPeersExpiry(t *testing.T) {
	seal, _ := credential.NewSealer(testSecret, "wxunit")
	const key = "k:lease"
	ctx := context.Background()

	t.Run("lost", func(t *testing.T) {
		inner := memstore.New().Open()
		b := &racingCAS{Backend: inner, calls: map[string]int{}}
		sh := credential.NewShared(b, seal, credential.SharedOptions{})
		peerUntil := time.Now().Add(9 * time.Second).Truncate(time.Millisecond)
		b.peer = func() []byte { return sh.SealClaim(key, peerUntil) }
		if ok, err := inner.Add(ctx, key, []byte("planted"), time.Minute); err != nil || !ok {
			t.Fatal(ok, err)
		}
		_, won, until, err := sh.Claim(ctx, key, 5*time.Second, time.Now().Add(time.Minute))
		if err != nil || won {
			t.Fatalf("claim = won %v, %v; want lost to the peer", won, err)
		}
		// The peer's claim, plus the clock skew a claim is granted.
		if until.Before(peerUntil) || until.After(peerUntil.Add(10*time.Second)) {
			t.Fatalf("claim reported the holder's claim until %v; want the peer's %v", until, peerUntil)
		}
	})

	t.Run("swap fails", func(t *testing.T) {
		inner := memstore.New().Open()
		boom := errors.New("boom")
		b := &racingCAS{Backend: inner, fail: boom, calls: map[string]int{}}
		sh := credential.NewShared(b, seal, credential.SharedOptions{})
		if ok, err := inner.Add(ctx, key, []byte("planted"), time.Minute); err != nil || !ok {
			t.Fatal(ok, err)
		}
		_, won, _, err := sh.Claim(ctx, key, 5*time.Second, time.Now().Add(time.Minute))
		if err == nil || won {
			t.Fatalf("claim with a failing swap = won %v, %v; want an error", won, err)
		}
		if b.calls["add"] != 1 || b.calls["get"] != 1 || b.calls["cas"] != 1 {
			t.Fatalf("store calls %v; want one add, one get, one cas", b.calls)
		}
	})
}
