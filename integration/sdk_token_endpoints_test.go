package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/caddyserver/caddy/v2"
)

// TestSDKTokenEndpoints: an SDK gets a gateway.Placeholder in WeChat's shape, its
// appid and secret go nowhere, and the gateway.Placeholder never reaches WeChat
// whatever route or part of the request carries it.
func TestSDKTokenEndpoints(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	var seen reqLog
	logAll(f, &seen, nil)
	g := startCaddy(t, basicConfig(f.URL, ""))
	waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second)
	const clientSecret = "client-secret-must-go-nowhere"

	before := len(seen.all())
	answers := []result{
		get(t, g.URL+"/cgi-bin/token?grant_type=client_credential&appid=wxclient&secret="+clientSecret),
		do(t, http.MethodPost, g.URL+"/cgi-bin/stable_token",
			[]byte(`{"grant_type":"client_credential","appid":"wxclient","secret":"`+clientSecret+`","force_refresh":true}`),
			"Content-Type", "application/json"),
		get(t, g.URL+"/cgi-bin/gettoken?corpid=ww1&corpsecret="+clientSecret),
		get(t, g.URL+"/CGI-BIN/Token?grant_type=client_credential"),
	}
	for i, r := range answers {
		tok, _ := r.JSON["access_token"].(string)
		if r.Status != 200 || tok != gateway.Placeholder || r.JSON["expires_in"] != float64(7200) {
			t.Errorf("answer %d: %d %s", i, r.Status, r.Body)
		}
		_, hasCode := r.JSON["errcode"]
		if wecom := i == 2; hasCode != wecom || r.errcode() != 0 {
			t.Errorf("answer %d: errcode present=%v, want %v: %s", i, hasCode, wecom, r.Body)
		}
	}
	if got := seen.since(before); len(got) != 0 {
		t.Errorf("token endpoint calls reached the upstream: %v", got)
	}

	// The SDK's next call carries the gateway.Placeholder: the gateway's token goes instead.
	before = len(seen.all())
	r := get(t, g.URL+"/cgi-bin/user/info?openid=o1&access_token="+gateway.Placeholder)
	if r.Status != 200 || r.errcode() != 0 {
		t.Errorf("api call with the gateway.Placeholder: %d %s", r.Status, r.Body)
	}
	for _, s := range seen.since(before) {
		if gateway.HoldsPlaceholder(s.URI) || !strings.Contains(s.RawQuery, "access_token="+f.CurrentStable()) {
			t.Errorf("upstream saw %q", s.URI)
		}
	}

	// Anywhere else, the request is refused and nothing is sent.
	before = len(seen.all())
	refused := []result{
		get(t, g.URL+"/sns/userinfo?openid=o1&access_token="+gateway.Placeholder),
		get(t, g.URL+"/sns/auth?openid=o1&access_token="+strings.ToLower(gateway.Placeholder)),
		get(t, g.URL+"/cgi-bin/user/info?openid=o1&component_access_token="+gateway.Placeholder),
		get(t, g.URL+"/cgi-bin/user/info?openid=o1&x=%43ADDY_WECHAT_PLACEHOLDER_x"),
		get(t, g.URL+"/cgi-bin/"+gateway.Placeholder+"/info"),
		do(t, http.MethodPost, g.URL+"/cgi-bin/message/custom/send",
			[]byte(`{"touser":"o1","access_token":"`+gateway.Placeholder+`"}`), "Content-Type", "application/json"),
	}
	for i, r := range refused {
		if r.Status != http.StatusBadRequest || r.errcode() != 40097 {
			t.Errorf("refusal %d: %d %s", i, r.Status, r.Body)
		}
	}
	if got := seen.since(before); len(got) != 0 {
		t.Errorf("a gateway.Placeholder reached the upstream: %v", got)
	}

	// In the caller's Authorization header it needs no refusal: the
	// gateway strips that header (keep_caller_auth is off), so the call
	// goes out with the gateway's token and without the gateway.Placeholder.
	before = len(seen.all())
	r = do(t, http.MethodGet, g.URL+"/cgi-bin/user/info?openid=o1", nil, "Authorization", "Bearer "+gateway.Placeholder)
	if r.Status != 200 || r.errcode() != 0 {
		t.Errorf("call with the gateway.Placeholder in Authorization: %d %s", r.Status, r.Body)
	}
	for _, s := range seen.since(before) {
		if gateway.HoldsPlaceholder(s.URI) || !strings.Contains(s.RawQuery, "access_token="+f.CurrentStable()) {
			t.Errorf("upstream saw %q", s.URI)
		}
	}
	if h := f.Headers(); h.Authorization != 0 {
		t.Errorf("Authorization reached the upstream %d times", h.Authorization)
	}
}

// TestSDKTokenEndpointsOff: "sdk_token_endpoints": false keeps the 403.
func TestSDKTokenEndpointsOff(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	var seen reqLog
	logAll(f, &seen, nil)
	port, admin := freePort(t), freePort(t)
	cfg, err := adaptCaddyfile(fmt.Sprintf(basicConfig(f.URL, ""), port, admin, t.TempDir()+"/caddy.log"))
	if err != nil {
		t.Fatal(err)
	}
	off := []byte(`"protocol":"wechat","sdk_token_endpoints":false`)
	cfg = bytes.Replace(cfg, []byte(`"protocol":"wechat"`), off, 1)
	if !bytes.Contains(cfg, off) {
		t.Fatalf("no wechat transport in %s", cfg)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caddy.Stop() })
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	for _, p := range []string{"/cgi-bin/token", "/cgi-bin/stable_token", "/cgi-bin/gettoken"} {
		r := get(t, url+p)
		if r.Status != http.StatusForbidden || r.errcode() != 40002 {
			t.Errorf("%s: %d %s", p, r.Status, r.Body)
		}
	}
	if got := seen.all(); len(got) != 0 {
		t.Errorf("forwarded: %v", got)
	}
	var back map[string]any
	if err := json.Unmarshal(get(t, "http://"+fmt.Sprintf("127.0.0.1:%d", admin)+"/config/").Body, &back); err != nil || !strings.Contains(fmt.Sprint(back), "sdk_token_endpoints:false") {
		t.Errorf("config round trip lost the option: %v", err)
	}
}
