package credential_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memstore"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Tests of the registry's edges (authorizers.go), each pinned by a
// mutant that lived through the scenario tests.

// An appid becomes part of a store key and a log field, so its alphabet
// and length are exact: every boundary character on both sides.
func TestValidAppIDBounds(t *testing.T) {
	ok := []string{"a", "z", "A", "Z", "0", "9", "_", "-", "wx1234567890abcdef", strings.Repeat("a", 64)}
	bad := []string{"", strings.Repeat("a", 65), "`", "{", "@", "[", "/", ":", " ", "wx.1", "wx%2F", "wx\x00", "微信"}
	for _, s := range ok {
		if !credential.ValidAppID(s) {
			t.Errorf("ValidAppID(%q) = false", s)
		}
	}
	for _, s := range bad {
		if credential.ValidAppID(s) {
			t.Errorf("ValidAppID(%q) = true", s)
		}
	}
}

// The status view's pages: the cursor is exclusive (no authorizer twice),
// a page exactly as long as the rest ends the listing, and a limit of 0
// or less means the default of 100.
func TestRegistryPaging(t *testing.T) {
	e := newOpEnv(t, false)
	n := e.node()
	e.push(t, n)
	var ids []string
	for i := range 5 {
		ids = append(ids, fmt.Sprintf("wxpage%d", i))
		e.fake.AddAuthorizer(ids[i])
	}
	e.seed(t, n, ids)
	appids := func(p []credential.AuthorizerStatus) string {
		var s []string
		for _, a := range p {
			s = append(s, a.AppID)
		}
		return strings.Join(s, ",")
	}
	p1, next := n.reg.Page("", 2)
	if appids(p1) != "wxpage0,wxpage1" || next != "wxpage1" {
		t.Fatalf("page 1: %s next %q", appids(p1), next)
	}
	p2, next := n.reg.Page(next, 2)
	if appids(p2) != "wxpage2,wxpage3" || next != "wxpage3" {
		t.Fatalf("page 2: %s next %q", appids(p2), next)
	}
	p3, next := n.reg.Page(next, 2)
	if appids(p3) != "wxpage4" || next != "" {
		t.Fatalf("page 3: %s next %q", appids(p3), next)
	}
	all, next := n.reg.Page("", 5)
	if len(all) != 5 || next != "" {
		t.Fatalf("a page as long as the rest: %d entries, next %q", len(all), next)
	}
	for _, limit := range []int{0, -1} {
		all, next = n.reg.Page("", limit)
		if len(all) != 5 || next != "" {
			t.Fatalf("limit %d: %d entries, next %q", limit, len(all), next)
		}
	}
}

// An unknown authorizer is ErrUnknownAuthorizer without a store; with a
// store whose breaker is open it is "unavailable", never "unknown": a
// store outage must not read as a merchant that never authorized.
func TestRegistryUnknownVersusStoreDown(t *testing.T) {
	e := newOpEnv(t, false)
	n := e.node()
	if _, err := n.reg.Get(ctx, "wxnobody"); !errors.Is(err, credential.ErrUnknownAuthorizer) {
		t.Fatalf("no store: %v", err)
	}

	e = newOpEnv(t, true)
	n = e.node()
	if _, err := n.reg.Get(ctx, "wxnobody"); !errors.Is(err, credential.ErrUnknownAuthorizer) {
		t.Fatalf("store up: %v", err)
	}
	e.store.(*memstore.Store).Kill()
	for range 10 {
		if n.shared.BreakerOpen() {
			break
		}
		_, _ = n.reg.Get(ctx, "wxnobody")
	}
	_, err := n.reg.Get(ctx, "wxnobody")
	if err == nil || errors.Is(err, credential.ErrUnknownAuthorizer) || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("store down: %v", err)
	}
}

// NewRegistry's defaults: a zero Window is AuthorizerWindow (with Rand
// near 1, the renewal lands about its Max before expiry, not the access
// token's 4.5 min), and a given Logger is kept (the
// authorizer's fetch is logged to it).
func TestRegistryDefaults(t *testing.T) {
	e := newOpEnv(t, false)
	core, logs := observer.New(zapcore.InfoLevel)
	n := e.node()
	e.push(t, n)
	reg := credential.NewRegistry(n.plat, credential.RegistryConfig{Scheduler: n.sched, Now: e.clock.Now,
		Rand: func() float64 { return 0.999 }, Logger: zap.New(core), Ceiling: -1})
	t.Cleanup(func() { reg.Close() })
	e.fake.AddAuthorizer("wxdefaults")
	e.seed(t, &node{reg: reg, plat: n.plat}, []string{"wxdefaults"})
	tok, a, err := reg.Token(ctx, "wxdefaults")
	if err != nil {
		t.Fatal(err)
	}
	w := credential.AuthorizerWindow
	if left := tok.ExpiresAt.Sub(a.Cache().RenewAt()); left < w.Max-time.Minute || left > w.Max+time.Minute {
		t.Fatalf("renews %v before expiry; want about %v", left, w.Max)
	}
	if logs.FilterMessageSnippet("fetched").FilterField(zap.String("appid", "wxdefaults")).Len() != 1 {
		t.Fatalf("the authorizer's fetch was not logged to the given logger: %v", logs.All())
	}
}

// Authorizer caches never peek the store: ten thousand once-a-minute
// peeks would be the store's whole load. Their next wake-up is the
// renewal (mutant: PeekInterval 1 instead of -1).
func TestAuthorizerCachesDoNotPeek(t *testing.T) {
	e := newOpEnv(t, true)
	n := e.node()
	e.push(t, n)
	e.authorize(t, n, "wxnopeek")
	a := n.reg.Lookup("wxnopeek")
	if a == nil {
		t.Fatal("authorizer not held")
	}
	if next, renew := a.Cache().Next(), a.Cache().RenewAt(); !next.Equal(renew) {
		t.Fatalf("next wake-up %v; want the renewal at %v", next, renew)
	}
}
