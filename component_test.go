package wechat

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddy-wechat/wechat/fakewechat"
	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddyserver/caddy/v2"
)

const (
	testComponentAppID  = "wxcomponent0000001"
	testComponentSecret = "component-secret-0123456789abcdef"
	testComponentToken  = "callbacktoken0001"
	testComponentAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
)

// componentFake is the fake open platform behind a server that can
// reject chosen tokens and notes whether the authorizer header leaked.
type componentFake struct {
	*fakewechat.Server
	URL        string
	sawHeader  atomic.Bool
	lastQuery  atomic.Value // string: the raw query of the last request
	mu         sync.Mutex
	rejectToks map[string]bool
}

func newComponentFake(t *testing.T, rotateEvery int) *componentFake {
	f := &componentFake{rejectToks: map[string]bool{}, Server: fakewechat.New(fakewechat.Options{Component: fakewechat.ComponentOptions{
		AppID: testComponentAppID, Secret: testComponentSecret, Token: testComponentToken, EncodingAESKey: testComponentAESKey,
		RotateEvery: rotateEvery}})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(AuthorizerHeader) != "" {
			f.sawHeader.Store(true)
		}
		f.lastQuery.Store(r.URL.RawQuery)
		f.mu.Lock()
		bad := f.rejectToks[r.URL.Query().Get("access_token")]
		f.mu.Unlock()
		if bad {
			io.WriteString(w, `{"errcode":40001,"errmsg":"invalid credential rid: x"}`)
			return
		}
		f.Server.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *componentFake) reject(tok string) {
	f.mu.Lock()
	f.rejectToks[tok] = true
	f.mu.Unlock()
}

func componentConfig(upstream string) string {
	return `{
	admin 127.0.0.1:%[2]d
	log {
		output file %[3]s
		level DEBUG
	}
}
http://127.0.0.1:%[1]d {
	handle /wechat/component/callback {
		wechat_component_callback {
			appid {env.TEST_COMPONENT_APPID}
			secret {env.TEST_COMPONENT_SECRET}
			token {env.TEST_COMPONENT_TOKEN}
			aes_key {env.TEST_COMPONENT_AES_KEY}
			upstream ` + upstream + `
		}
	}
	handle {
		wechat_component {
			appid {env.TEST_COMPONENT_APPID}
			secret {env.TEST_COMPONENT_SECRET}
			upstream ` + upstream + `
		}
	}
}
`
}

func onlyPlatform(t *testing.T) *platform {
	var p *platform
	n := 0
	platforms.Range(func(_, v any) bool { p = v.(*platform); n++; return true })
	if n != 1 {
		t.Fatalf("%d platforms in the pool, want 1", n)
	}
	return p
}

func storedRefresh(t *testing.T, p *platform, appid string) string {
	a := p.reg.Lookup(appid)
	if a == nil {
		t.Fatalf("%s not in the registry", appid)
	}
	v, err := a.Cache().Aux().Get(context.Background(), credential.AuxRefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
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
	t.Cleanup(func() {
		caddy.Stop()
		platforms.Range(func(k, _ any) bool { t.Errorf("platform %v still pooled after stop", k); return false })
	})
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
	p := onlyPlatform(t)
	if got := storedRefresh(t, p, merchant); got != f.RefreshTokenOf(merchant) {
		t.Fatal("the authorized event did not store the refresh token")
	}
	for _, c := range []struct{ url, hdr string }{
		{g.URL + "/cgi-bin/user/info?openid=o1", merchant},
		{g.URL + "/authorizer/" + merchant + "/cgi-bin/user/info?openid=o1&access_token=CLIENTS", ""},
	} {
		var r result
		if c.hdr != "" {
			r = do(t, http.MethodGet, c.url, nil, AuthorizerHeader, c.hdr)
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
	r = do(t, http.MethodGet, g.URL+"/cgi-bin/user/info", nil, AuthorizerHeader, "wxnobody000000001")
	if r.Status != 404 || r.errcode() != 61003 || r.Header.Get("X-Wechat-Gateway") != "error" || !strings.Contains(string(r.Body), "unknown authorizer") {
		t.Fatalf("unknown authorizer: %d %v %s", r.Status, r.Header, r.Body)
	}

	// Rotation: WeChat rejects the token, the gateway renews (WeChat
	// rotates the refresh token), stores the new one, replays.
	old := f.CurrentAuthorizerToken(merchant)
	secrets = append(secrets, old, f.RefreshTokenOf(merchant))
	f.reject(old)
	if r := do(t, http.MethodGet, g.URL+"/cgi-bin/user/info?openid=o1", nil, AuthorizerHeader, merchant); r.errcode() != 0 {
		t.Fatalf("replay after rejection: %s", r.Body)
	}
	if n := f.Fetches("api_authorizer_token"); n != 1 {
		t.Fatalf("api_authorizer_token calls = %d, want 1", n)
	}
	if got := storedRefresh(t, p, merchant); got != f.RefreshTokenOf(merchant) {
		t.Fatal("the rotated refresh token was not stored")
	}

	// 61023: the stored refresh token is lost (overwritten with a bad
	// one); recovery through api_get_authorizer_info.
	if err := p.reg.Authorize(context.Background(), &credential.Authorization{AuthorizerAppID: merchant, RefreshToken: "refreshtoken@@@lost"}); err != nil {
		t.Fatal(err)
	}
	cur := f.CurrentAuthorizerToken(merchant)
	secrets = append(secrets, cur, f.RefreshTokenOf(merchant))
	f.reject(cur)
	if r := do(t, http.MethodGet, g.URL+"/authorizer/"+merchant+"/cgi-bin/user/info?openid=o1", nil); r.errcode() != 0 {
		t.Fatalf("after 61023: %s", r.Body)
	}
	if f.Fetches("api_get_authorizer_info") < 1 {
		t.Fatal("no recovery through api_get_authorizer_info")
	}
	if got := storedRefresh(t, p, merchant); got != f.RefreshTokenOf(merchant) {
		t.Fatal("the recovered refresh token was not stored")
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
	r = do(t, http.MethodGet, g.URL+"/cgi-bin/user/info", nil, AuthorizerHeader, merchant)
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
