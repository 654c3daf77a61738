package integration

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-wechat/wechat"
	"github.com/caddy-wechat/wechat/fakewechat"
)

// Issue 19 through a real Caddy: authorizer and component tokens are
// probed before request evidence drops them. 1,000 calls of an API that
// answers 40001 whatever the token, for one authorizer, cost no
// api_authorizer_token and no api_component_token (≤ 1 and 0 required);
// 200 calls of such a component API cost no api_component_token; and a
// real revocation 0.5 s later is repaired on the first call that meets
// it. Alone and over memcache.
func TestComponentAlways40001ThroughCaddy(t *testing.T) {
	mc := startMemcached(t)
	for _, store := range []string{"", "memcache " + mc.Addr} {
		name := "alone"
		if store != "" {
			name = "memcache"
		}
		t.Run(name, func(t *testing.T) {
			mc.FlushAll()
			resetAccounts(t)
			t.Setenv("TEST_COMPONENT_APPID", testComponentAppID)
			t.Setenv("TEST_COMPONENT_SECRET", testComponentSecret)
			t.Setenv("TEST_COMPONENT_TOKEN", testComponentToken)
			t.Setenv("TEST_COMPONENT_AES_KEY", testComponentAESKey)
			f := newComponentFake(t, 1) // every api_authorizer_token rotates the refresh token
			cfg := strings.ReplaceAll(componentConfig(f.URL), "upstream "+f.URL, "upstream "+f.URL+"\n\t\t\t"+store)
			g := startCaddy(t, cfg)
			t.Cleanup(func() { caddy.Stop() })
			cb := g.URL + "/wechat/component/callback"
			const merchant = "wxmerchant0000077"
			if _, err := f.PushTicket(cb); err != nil {
				t.Fatal(err)
			}
			if _, err := f.PushAuthorized(cb, merchant); err != nil {
				t.Fatal(err)
			}
			call := func(path string) result {
				return do(t, http.MethodGet, g.URL+path, nil, wechat.AuthorizerHeader, merchant)
			}
			compBody := []byte(`{"component_appid":"` + testComponentAppID + `"}`)
			if r := call("/cgi-bin/user/info?openid=o1"); r.errcode() != 0 {
				t.Fatalf("the first authorizer call: %s", r.Body)
			}
			if r := do(t, http.MethodPost, g.URL+"/cgi-bin/component/api_create_preauthcode", compBody); r.errcode() != 0 {
				t.Fatalf("the first component call: %s", r.Body)
			}
			auth0, comp0 := f.Fetches("api_authorizer_token"), f.Fetches("api_component_token")
			for i := range 1000 {
				if r := call(fakewechat.AlwaysInvalidPath); r.Status != 200 || r.errcode() != 40001 {
					t.Fatalf("the 40001-only API: want WeChat's own 40001, got %d %s", r.Status, r.Body)
				}
				if i%10 == 0 {
					if r := call("/cgi-bin/user/info?openid=o1"); r.errcode() != 0 {
						t.Fatalf("call %d of another API: %s", i, r.Body)
					}
				}
				if i%5 == 0 {
					if r := do(t, http.MethodPost, g.URL+fakewechat.ComponentAlwaysInvalidPath, compBody); r.errcode() != 40001 {
						t.Fatalf("the 40001-only component API: %s", r.Body)
					}
				}
			}
			if n := f.Fetches("api_authorizer_token") - auth0; n > 1 {
				t.Errorf("1,000 calls of a 40001-only API: %d api_authorizer_token; want ≤ 1", n)
			}
			if n := f.Fetches("api_component_token") - comp0; n != 0 {
				t.Errorf("1,000 calls of 40001-only APIs: %d api_component_token; want 0", n)
			}
			if n := f.Fetches("probe"); n < 1 || n > 4 {
				t.Errorf("%d authorizer probes; want a few (a verdict per API path per 30 s)", n)
			}
			if n := f.Fetches("api_get_authorizer_list"); n < 1 || n > 4 {
				t.Errorf("%d component probes; want a few", n)
			}

			// A real revocation of every token, 0.5 s after the evidence.
			time.Sleep(500 * time.Millisecond)
			f.RevokeAll()
			if r := call("/cgi-bin/user/info?openid=o1"); r.Status != 200 || r.errcode() != 0 {
				t.Fatalf("the first authorizer call after the revocation: %d %s", r.Status, r.Body)
			}
			if r := do(t, http.MethodPost, g.URL+"/cgi-bin/component/api_create_preauthcode", compBody); r.errcode() != 0 {
				t.Fatalf("the first component call after the revocation: %s", r.Body)
			}
			if !refreshSaved(t, g, merchant) {
				t.Error("the rotated refresh token was not stored")
			}
		})
	}
}
