package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/caddy-wechat/wechat"
	"github.com/caddyserver/caddy/v2"
)

// refreshSaved reports whether the admin API shows merchant's refresh
// token as written to the store (refresh_token_unsaved absent).
func refreshSaved(t *testing.T, g *runningCaddy, merchant string) bool {
	t.Helper()
	resp, err := http.Get("http://" + g.Admin + "/wechat/status/authorizers?q=" + merchant)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var page struct {
		Items []struct {
			AppID   string `json:"authorizer_appid"`
			Unsaved bool   `json:"refresh_token_unsaved"`
		} `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || len(page.Items) != 1 || page.Items[0].AppID != merchant {
		t.Fatalf("authorizers view for %s: %v %+v", merchant, err, page)
	}
	return !page.Items[0].Unsaved
}

// End to end through a real Caddy: ticket push, component token, an
// authorized event, calls by header and by path prefix, an unknown
// authorizer, a persisted rotation, a 61023 recovery, refresh tokens
// scrubbed from api_get_authorizer_info, the paged status, an
// unauthorized event, and no credential in any log line.
func TestComponentEndToEnd(t *testing.T) {
	resetAccounts(t)
	t.Setenv("TEST_COMPONENT_APPID", testComponentAppID)
	t.Setenv("TEST_COMPONENT_SECRET", testComponentSecret)
	t.Setenv("TEST_COMPONENT_TOKEN", testComponentToken)
	t.Setenv("TEST_COMPONENT_AES_KEY", testComponentAESKey)
	f := newComponentFake(t, 1)
	g := startCaddy(t, componentConfig(f.URL))
	t.Cleanup(func() { caddy.Stop() })
	cb := g.URL + "/wechat/component/callback"
	const merchant = "wxmerchant0000001"
	var secrets []string

	// A ticket push, then a component API call: one component token.
	ticket, err := f.PushTicket(cb)
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, ticket)
	r := do(t, http.MethodPost, g.URL+"/cgi-bin/component/api_create_preauthcode", []byte(`{"component_appid":"`+testComponentAppID+`"}`))
	if r.Status != 200 || r.errcode() != 0 || r.JSON["pre_auth_code"] == nil {
		t.Fatalf("component call: %d %s", r.Status, r.Body)
	}
	if n := f.Fetches("api_component_token"); n != 1 {
		t.Fatalf("api_component_token calls = %d", n)
	}

	// The authorized event: api_query_auth, the refresh token stored,
	// its first token used without a fetch.
	if _, err := f.PushAuthorized(cb, merchant); err != nil {
		t.Fatal(err)
	}
	if !refreshSaved(t, g, merchant) {
		t.Fatal("the authorized event did not store the refresh token")
	}
	for _, c := range []struct{ url, hdr string }{
		{g.URL + "/cgi-bin/user/info?openid=o1", merchant},
		{g.URL + "/authorizer/" + merchant + "/cgi-bin/user/info?openid=o1&access_token=CLIENTS", ""},
	} {
		var r result
		if c.hdr != "" {
			r = do(t, http.MethodGet, c.url, nil, wechat.AuthorizerHeader, c.hdr)
		} else {
			r = get(t, c.url)
		}
		if r.Status != 200 || r.errcode() != 0 {
			t.Fatalf("%s: %d %s", c.url, r.Status, r.Body)
		}
	}
	if f.sawHeader.Load() {
		t.Fatal("the authorizer header reached WeChat")
	}
	if q := f.LastAPIQuery(); q.Get("access_token") == "CLIENTS" || len(q["access_token"]) != 1 {
		t.Fatalf("the client's access_token was passed on: %v", q)
	}
	if n := f.Fetches("api_authorizer_token"); n != 0 {
		t.Fatalf("api_authorizer_token calls = %d, want 0 (api_query_auth gave the first token)", n)
	}

	// An unknown authorizer: a clear JSON error from the gateway.
	r = do(t, http.MethodGet, g.URL+"/cgi-bin/user/info", nil, wechat.AuthorizerHeader, "wxnobody000000001")
	if r.Status != 404 || r.errcode() != 61003 || r.Header.Get("X-Wechat-Gateway") != "error" || !strings.Contains(string(r.Body), "unknown authorizer") {
		t.Fatalf("unknown authorizer: %d %v %s", r.Status, r.Header, r.Body)
	}

	// Rotation: WeChat rejects the token, the gateway renews (WeChat
	// rotates the refresh token), stores the new one, replays.
	old := f.CurrentAuthorizerToken(merchant)
	secrets = append(secrets, old, f.RefreshTokenOf(merchant))
	f.reject(old)
	if r := do(t, http.MethodGet, g.URL+"/cgi-bin/user/info?openid=o1", nil, wechat.AuthorizerHeader, merchant); r.errcode() != 0 {
		t.Fatalf("replay after rejection: %s", r.Body)
	}
	if n := f.Fetches("api_authorizer_token"); n != 1 {
		t.Fatalf("api_authorizer_token calls = %d, want 1", n)
	}
	if !refreshSaved(t, g, merchant) {
		t.Fatal("the rotated refresh token was not stored")
	}

	// 61023: WeChat no longer takes the refresh token the gateway holds
	// (the merchant authorized again elsewhere); recovery through
	// api_get_authorizer_info.
	secrets = append(secrets, f.ReplaceRefreshToken(merchant))
	cur := f.CurrentAuthorizerToken(merchant)
	secrets = append(secrets, cur, f.RefreshTokenOf(merchant))
	f.reject(cur)
	if r := do(t, http.MethodGet, g.URL+"/authorizer/"+merchant+"/cgi-bin/user/info?openid=o1", nil); r.errcode() != 0 {
		t.Fatalf("after 61023: %s", r.Body)
	}
	if f.Fetches("api_get_authorizer_info") < 1 {
		t.Fatal("no recovery through api_get_authorizer_info")
	}
	if !refreshSaved(t, g, merchant) {
		t.Fatal("the recovered refresh token was not stored")
	}
	secrets = append(secrets, f.CurrentAuthorizerToken(merchant), f.RefreshTokenOf(merchant))
	// The gateway now holds the current refresh token: the next renewal
	// needs no recovery (WeChat refuses any other with 61023).
	recoveries := f.Fetches("api_get_authorizer_info")
	f.reject(f.CurrentAuthorizerToken(merchant))
	if r := do(t, http.MethodGet, g.URL+"/cgi-bin/user/info?openid=o1", nil, wechat.AuthorizerHeader, merchant); r.errcode() != 0 {
		t.Fatalf("renewal after the recovery: %s", r.Body)
	}
	if n := f.Fetches("api_get_authorizer_info"); n != recoveries {
		t.Fatalf("api_get_authorizer_info calls %d after the recovery, want %d: the recovered refresh token was not kept", n, recoveries)
	}
	secrets = append(secrets, f.CurrentAuthorizerToken(merchant), f.RefreshTokenOf(merchant))

	// api_get_authorizer_info through the gateway: no refresh token.
	r = do(t, http.MethodPost, g.URL+"/cgi-bin/component/api_get_authorizer_info",
		[]byte(`{"component_appid":"`+testComponentAppID+`","authorizer_appid":"`+merchant+`"}`))
	if r.errcode() != 0 || strings.Contains(string(r.Body), "refreshtoken@@@") || !strings.Contains(string(r.Body), `"authorizer_refresh_token":""`) {
		t.Fatalf("api_get_authorizer_info: %s", r.Body)
	}
	// /sns/* (a user's OAuth token) passes untouched.
	get(t, g.URL+"/authorizer/"+merchant+"/sns/auth?access_token=USERTOKEN&openid=o1")
	if q, _ := f.lastQuery.Load().(string); q != "access_token=USERTOKEN&openid=o1" {
		t.Fatalf("/sns/auth: the query was changed: %q", q)
	}
	// The gateway's own component endpoints are refused.
	if r := do(t, http.MethodPost, g.URL+"/cgi-bin/component/api_authorizer_token", []byte(`{}`)); r.Status != 403 {
		t.Fatalf("api_authorizer_token through the gateway: %d", r.Status)
	}

	// The paged status view: the authorizer, no credential.
	resp, err := http.Get("http://" + g.Admin + "/wechat/status/authorizers?limit=10")
	if err != nil {
		t.Fatal(err)
	}
	status, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(status), merchant) || !strings.Contains(string(status), `"ticket_stored":true`) {
		t.Fatalf("status: %d %s", resp.StatusCode, status)
	}

	// unauthorized: forgotten.
	if err := f.PushUnauthorized(cb, merchant); err != nil {
		t.Fatal(err)
	}
	r = do(t, http.MethodGet, g.URL+"/cgi-bin/user/info", nil, wechat.AuthorizerHeader, merchant)
	if r.Status != 404 || r.errcode() != 61003 {
		t.Fatalf("after unauthorized: %d %s", r.Status, r.Body)
	}

	// Metrics: component-level series only.
	resp, err = http.Get("http://" + g.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"caddy_wechat_component_refresh_token_rotations_total", "caddy_wechat_component_callbacks_total", "caddy_wechat_component_authorizers"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(string(metrics), merchant) {
		t.Error("an authorizer appid is a metric label")
	}

	logs := readFile(t, g.LogFile)
	for _, s := range append(secrets, testComponentSecret, testComponentToken, testComponentAESKey) {
		for _, hay := range []string{logs, string(status), string(metrics)} {
			if s != "" && strings.Contains(hay, s) {
				t.Fatalf("a credential leaked: %.14s…", s)
			}
		}
	}
}
