package credential_test

import (
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// callWith is the open-platform request path on the fake: a call of path
// with the cache's token, 40001 whatever the token when always40001, and
// on a token errcode RejectedOn and at most one replay; an answer that is
// not a token errcode confirms the token.
func (e *opEnv) callWith(t *testing.T, c *credential.Cache, path string, always40001 bool) int {
	t.Helper()
	answer := func(tok *credential.Token) int {
		if always40001 || !e.fake.Valid(tok.Value) {
			return 40001
		}
		return 0
	}
	tok, err := c.Token(ctx)
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	code := answer(tok)
	if code == 0 {
		c.Confirm(tok)
		return 0
	}
	fresh, replay, err := c.RejectedOn(ctx, tok, path)
	if err != nil {
		t.Fatalf("RejectedOn: %v", err)
	}
	if !replay {
		return code
	}
	if code = answer(fresh); code == 0 {
		c.Confirm(fresh)
	}
	return code
}

// Issue 19: authorizer and component tokens are probed before they are
// dropped. 1,000 calls of a 40001-only API for one authorizer cost at most
// 1 api_authorizer_token and 0 api_component_token; 1,000 calls of a
// 40001-only component API cost no api_component_token; and a real
// revocation of either token is still repaired on the first call that
// meets it. Alone and over a store.
func TestOpenPlatformAlways40001Budget(t *testing.T) {
	for _, store := range []bool{false, true} {
		name := "alone"
		if store {
			name = "shared"
		}
		t.Run(name, func(t *testing.T) {
			e := newOpEnv(t, store)
			n := e.node()
			e.push(t, n)
			ids, _ := e.fake.AddAuthorizers(1)
			e.seed(t, n, ids)
			a, err := n.reg.Get(ctx, ids[0])
			if err != nil {
				t.Fatal(err)
			}
			ac := a.Cache()
			if e.callWith(t, ac, "/cgi-bin/message/custom/send", false) != 0 {
				t.Fatal("the first authorizer call failed")
			}
			auth0, comp0 := e.fake.AuthorizerFetches.Load(), e.fake.ComponentFetches.Load()
			for i := range 1000 {
				e.clock.Advance(600 * time.Millisecond)
				if code := e.callWith(t, ac, "/cgi-bin/test/always_40001", true); code != 40001 {
					t.Fatalf("the 40001-only API answered %d", code)
				}
				if code := e.callWith(t, ac, "/cgi-bin/message/custom/send", false); code != 0 {
					t.Fatalf("call %d of another API failed with %d", i, code)
				}
				if code := e.callWith(t, n.comp, "/cgi-bin/component/test_always_40001", true); code != 40001 {
					t.Fatalf("the 40001-only component API answered %d", code)
				}
				if code := e.callWith(t, n.comp, "/cgi-bin/component/api_create_preauthcode", false); code != 0 {
					t.Fatalf("component call %d failed with %d", i, code)
				}
			}
			// 10 minutes: the authorizer token renews at most once ahead.
			if got := e.fake.AuthorizerFetches.Load() - auth0; got > 1 {
				t.Fatalf("1,000 calls of a 40001-only API: %d api_authorizer_token; want ≤ 1", got)
			}
			if got := e.fake.ComponentFetches.Load() - comp0; got != 0 {
				t.Fatalf("1,000 calls of 40001-only APIs: %d api_component_token; want 0", got)
			}
			if p := e.fake.Probes.Load(); p > 25 {
				t.Fatalf("%d authorizer probes in 10 minutes; want ≤ 2 a minute", p)
			}
			if p := e.fake.ComponentProbes.Load(); p > 25 {
				t.Fatalf("%d component probes in 10 minutes; want ≤ 2 a minute", p)
			}

			// Revocations, 0.5 s after the evidence: repaired at once.
			e.clock.Advance(500 * time.Millisecond)
			old := ac.Current().Value
			e.fake.RevokeToken(old)
			if code := e.callWith(t, ac, "/cgi-bin/message/custom/send", false); code != 0 || ac.Current().Value == old {
				t.Fatalf("the first authorizer call after a revocation answered %d", code)
			}
			oldc := n.comp.Current().Value
			e.fake.RevokeToken(oldc)
			if code := e.callWith(t, n.comp, "/cgi-bin/component/api_create_preauthcode", false); code != 0 || n.comp.Current().Value == oldc {
				t.Fatalf("the first component call after a revocation answered %d", code)
			}
		})
	}
}
