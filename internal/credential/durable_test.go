package credential_test

import (
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memstore"
)

// A rotated refresh token is never used before it is durable: while the
// store refuses it, the renewal that would use it fails with a clear
// error and WeChat is not called (a use would rotate it again, and a
// crash then would lose the only live one); once the store is back, the
// kept token is written first, then used, and the store holds WeChat's
// current one.
func TestRotatedRefreshTokenNotUsedBeforeDurable(t *testing.T) {
	e := newOpEnv(t, true)
	e.fake.RotateEvery = 1
	n := e.node()
	e.push(t, n)
	if _, err := n.comp.Token(ctx); err != nil {
		t.Fatal(err)
	}
	ids, _ := e.fake.AddAuthorizers(1)
	e.seed(t, n, ids)
	a, _ := n.reg.Get(ctx, ids[0])
	store := e.store.(*memstore.Store)
	store.Kill()
	if _, err := a.Cache().Token(ctx); err != nil {
		t.Fatalf("token with the store down: %v", err)
	}
	if !a.Unsaved() {
		t.Fatal("the refused refresh token must be kept in memory")
	}
	fetches := e.fake.AuthorizerFetches.Load()
	e.clock.Advance(3 * time.Hour)
	a.Cache().ClearBackoff()
	_, err := a.Cache().Token(ctx)
	if err == nil || !strings.Contains(err.Error(), "not stored yet") {
		t.Fatalf("renewal with a rotated refresh token that is not durable: %v; want a clear error", err)
	}
	if got := e.fake.AuthorizerFetches.Load(); got != fetches {
		t.Fatalf("%d api_authorizer_token calls with a refresh token that is not durable; want 0", got-fetches)
	}
	store.Restart()
	e.clock.Advance(10 * time.Second) // past the breaker's cool-off
	a.Cache().ClearBackoff()
	if _, err := a.Cache().Token(ctx); err != nil {
		t.Fatalf("renewal once the store is back: %v", err)
	}
	if a.Unsaved() {
		t.Fatal("still unsaved")
	}
	b, _ := e.node().reg.Get(ctx, ids[0])
	got, err := b.Cache().Aux().Get(ctx, credential.AuxRefreshToken)
	if err != nil || string(got) != e.fake.RefreshToken(ids[0]) {
		t.Fatalf("the store does not hold WeChat's current refresh token (%v)", err)
	}
	if e.fake.InfoCalls.Load() != 0 {
		t.Fatal("a refresh token was lost (61023)")
	}
}
