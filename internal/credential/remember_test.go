package credential_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memstore"
	"github.com/caddy-wechat/wechat/internal/credential/storetest"
)

// recorder notes what Add writes, and can make one Add land and then
// fail, as a call that times out after the server applied it.
type recorder struct {
	credential.Backend
	mu         sync.Mutex
	keys, vals []string
	landFail   bool
}

var errLost = errors.New("i/o timeout")

func (r *recorder) Add(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	ok, err := r.Backend.Add(ctx, key, v, ttl)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys, r.vals = append(r.keys, key), append(r.vals, string(v))
	if r.landFail {
		r.landFail = false
		return false, errLost
	}
	return ok, err
}

const pushName = "1700000000\x00nonce0001\x00f0e1d2c3b4a5968778695a4b3c2d1e0f10213243"

// Remember marks a name once for the whole cluster: a second instance
// sees the mark, cannot lift it with its own claim, and the mark ends
// with Forget by its maker or with its ttl. The store sees neither the
// name nor anything secret.
func TestRememberOncePerCluster(t *testing.T) {
	clock := storetest.NewClock()
	st := memstore.New()
	st.Now = clock.Now
	rec := &recorder{Backend: st.Open()}
	a := credential.NewShared(rec, sealer(t, testSecret), credential.SharedOptions{Now: clock.Now})
	b := credential.NewShared(st.Open(), sealer(t, testSecret), credential.SharedOptions{Now: clock.Now})
	ctx := context.Background()
	const ttl = 10 * time.Minute

	ca, first, err := a.Remember(ctx, pushName, ttl)
	if err != nil || !first || ca == "" {
		t.Fatalf("first Remember: %q %v %v", ca, first, err)
	}
	cb, first, err := b.Remember(ctx, pushName, ttl)
	if err != nil || first {
		t.Fatalf("the other instance's Remember: first=%v %v; want false", first, err)
	}
	if err := b.Forget(ctx, pushName, cb); err != nil {
		t.Fatal(err)
	}
	if _, first, _ := b.Remember(ctx, pushName, ttl); first {
		t.Fatal("a claim that did not make the mark lifted it")
	}
	if _, first, _ := b.Remember(ctx, pushName+"x", ttl); !first {
		t.Fatal("another name found marked")
	}

	rec.mu.Lock()
	key, val := rec.keys[0], rec.vals[0]
	rec.mu.Unlock()
	if !strings.HasPrefix(key, a.Key("once")+":") || strings.Contains(key, "nonce0001") || strings.Contains(key, "f0e1d2") || len(key) > 200 {
		t.Fatalf("mark key %q: not under the account's names, or it shows the push", key)
	}
	if val != ca || strings.Contains(val, testSecret) || strings.Contains(val, "nonce0001") {
		t.Fatalf("mark value %q: want the random claim only", val)
	}
	other := credential.NewShared(st.Open(), sealer(t, "another-secret"), credential.SharedOptions{Now: clock.Now})
	if _, first, _ := other.Remember(ctx, pushName, ttl); !first {
		t.Fatal("another account's mark collided")
	}

	if err := a.Forget(ctx, pushName, ca); err != nil {
		t.Fatal(err)
	}
	if _, first, err := b.Remember(ctx, pushName, ttl); err != nil || !first {
		t.Fatalf("after Forget by its maker: first=%v %v; want true", first, err)
	}
	clock.Advance(ttl)
	if _, first, _ := a.Remember(ctx, pushName, ttl); !first {
		t.Fatal("the mark outlived its ttl")
	}
}

// A Remember that errs may still have made its mark (the Add landed, the
// answer was lost): its claim lets Forget undo it, even with the breaker
// open, so the push is not refused everywhere until the mark expires.
// With the breaker open Remember does not ask the store, and says so
// with an empty claim.
func TestRememberErrorForgetBypassesBreaker(t *testing.T) {
	clock := storetest.NewClock()
	st := memstore.New()
	st.Now = clock.Now
	rec := &recorder{Backend: st.Open(), landFail: true}
	a := credential.NewShared(rec, sealer(t, testSecret), credential.SharedOptions{Now: clock.Now})
	peer := credential.NewShared(st.Open(), sealer(t, testSecret), credential.SharedOptions{Now: clock.Now})
	ctx := context.Background()

	claim, first, err := a.Remember(ctx, pushName, time.Minute)
	if err == nil || first || claim == "" || !a.BreakerOpen() {
		t.Fatalf("Remember on a lost answer: %q %v %v (breaker open %v); want an error with a claim", claim, first, err, a.BreakerOpen())
	}
	if strings.Contains(err.Error(), "nonce0001") {
		t.Fatalf("the error quotes the push: %v", err)
	}
	if _, first, _ := peer.Remember(ctx, pushName, time.Minute); first {
		t.Fatal("the landed mark is missing")
	}
	ops := a.Ops()
	if c, first, err := a.Remember(ctx, pushName+"y", time.Minute); err == nil || first || c != "" || a.Ops() != ops {
		t.Fatalf("Remember with the breaker open: %q %v %v, %d calls; want an error, no claim, no call", c, first, err, a.Ops()-ops)
	}
	if err := a.Forget(ctx, pushName, claim); err != nil {
		t.Fatalf("Forget with the breaker open: %v", err)
	}
	if a.BreakerOpen() {
		t.Fatal("a Forget the store answered left the breaker open")
	}
	if _, first, _ := peer.Remember(ctx, pushName, time.Minute); !first {
		t.Fatal("Forget did not lift the landed mark")
	}
	if err := a.Forget(ctx, pushName, ""); err != nil {
		t.Fatal(err)
	}

	// A Forget that fails (store down) reports it and changes nothing.
	c, _, _ := a.Remember(ctx, "z", time.Minute)
	st.Kill()
	if err := a.Forget(ctx, "z", c); err == nil {
		t.Fatal("Forget on a dead store: no error")
	}
	st.Restart()
	if _, first, _ := peer.Remember(ctx, "z", time.Minute); first {
		t.Fatal("a failed Forget lifted the mark")
	}
}
