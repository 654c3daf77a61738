package wechat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func TestHoldsPlaceholder(t *testing.T) {
	p := placeholder
	for _, s := range []string{
		p, "access_token=" + p, "x=" + strings.ToLower(p), "a=1&b=" + p + "&c",
		"x=%43ADDY_WECHAT_PLACEHOLDER_1", "x=CADDY%5FWECHAT%5FPLACEHOLDER%5F1",
		"x=CADDY_WECHAT_PLACEHOLDER_%zz", "x=caddy_wechat_placeholder_+",
		"a_b__c=_____CaDdY_wEcHaT_pLaCeHoLdEr_", PlaceholderPrefix, "_" + PlaceholderPrefix,
	} {
		if !holdsPlaceholder(s) {
			t.Errorf("holdsPlaceholder(%q) = false", s)
		}
	}
	for _, s := range []string{"", "_", "access_token=abc", "CADDY_WECHAT_PLACEHOLDE", "ADDY_WECHAT_PLACEHOLDER_", "%zz",
		"CADDY_WECHAT_%2BPLACEHOLDER_", "CADDY-WECHAT-PLACEHOLDER-", "zh_CN&lang=zh_CN"} {
		if holdsPlaceholder(s) {
			t.Errorf("holdsPlaceholder(%q) = true", s)
		}
	}
	for _, b := range []string{p, "x" + strings.ToLower(p), `{"t":"cAdDy_WeChAt_PlAcEhOlDeR_"}`} {
		if !bodyHoldsPlaceholder([]byte(b)) {
			t.Errorf("bodyHoldsPlaceholder(%q) = false", b)
		}
	}
	for _, b := range []string{"", "CADDY_WECHAT_PLACEHOLDER", "CADDY_WECHAT\x7fPLACEHOLDER_", "\x00CADDY-WECHAT_PLACEHOLDER_"} {
		if bodyHoldsPlaceholder([]byte(b)) {
			t.Errorf("bodyHoldsPlaceholder(%q) = true", b)
		}
	}
	if !strings.HasPrefix(p, PlaceholderPrefix) || len(p) != len(PlaceholderPrefix)+32 {
		t.Errorf("placeholder %q", p)
	}
}

// TestSDKTokenEndpoints: an SDK gets a placeholder in WeChat's shape, its
// appid and secret go nowhere, and the placeholder never reaches WeChat
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
		if r.Status != 200 || tok != placeholder || r.JSON["expires_in"] != float64(7200) {
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

	// The SDK's next call carries the placeholder: the gateway's token goes instead.
	before = len(seen.all())
	r := get(t, g.URL+"/cgi-bin/user/info?openid=o1&access_token="+placeholder)
	if r.Status != 200 || r.errcode() != 0 {
		t.Errorf("api call with the placeholder: %d %s", r.Status, r.Body)
	}
	for _, s := range seen.since(before) {
		if holdsPlaceholder(s.URI) || !strings.Contains(s.RawQuery, "access_token="+f.CurrentStable()) {
			t.Errorf("upstream saw %q", s.URI)
		}
	}

	// Anywhere else, the request is refused and nothing is sent.
	before = len(seen.all())
	refused := []result{
		get(t, g.URL+"/sns/userinfo?openid=o1&access_token="+placeholder),
		get(t, g.URL+"/sns/auth?openid=o1&access_token="+strings.ToLower(placeholder)),
		get(t, g.URL+"/cgi-bin/user/info?openid=o1&component_access_token="+placeholder),
		get(t, g.URL+"/cgi-bin/user/info?openid=o1&x=%43ADDY_WECHAT_PLACEHOLDER_x"),
		get(t, g.URL+"/cgi-bin/"+placeholder+"/info"),
		do(t, http.MethodPost, g.URL+"/cgi-bin/message/custom/send",
			[]byte(`{"touser":"o1","access_token":"`+placeholder+`"}`), "Content-Type", "application/json"),
	}
	for i, r := range refused {
		if r.Status != http.StatusBadRequest || r.errcode() != 40097 {
			t.Errorf("refusal %d: %d %s", i, r.Status, r.Body)
		}
	}
	if got := seen.since(before); len(got) != 0 {
		t.Errorf("a placeholder reached the upstream: %v", got)
	}

	// In the caller's Authorization header it needs no refusal: the
	// gateway strips that header (keep_caller_auth is off), so the call
	// goes out with the gateway's token and without the placeholder.
	before = len(seen.all())
	r = do(t, http.MethodGet, g.URL+"/cgi-bin/user/info?openid=o1", nil, "Authorization", "Bearer "+placeholder)
	if r.Status != 200 || r.errcode() != 0 {
		t.Errorf("call with the placeholder in Authorization: %d %s", r.Status, r.Body)
	}
	for _, s := range seen.since(before) {
		if holdsPlaceholder(s.URI) || !strings.Contains(s.RawQuery, "access_token="+f.CurrentStable()) {
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
	cfg, err := adapt(fmt.Sprintf(basicConfig(f.URL, ""), port, admin, t.TempDir()+"/caddy.log"))
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

// BenchmarkRefusePlaceholder: the last check runs on every request.
func BenchmarkRefusePlaceholder(b *testing.B) {
	u, _ := url.Parse("http://api.weixin.qq.com/cgi-bin/user/info?openid=oABCDEFGHIJKLMNOPQRSTUVWXYZ012&lang=zh_CN&access_token=ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
	req := &http.Request{URL: u, Header: http.Header{
		"User-Agent": {"Go-http-client/1.1"}, "Accept-Encoding": {"gzip"}, "X-Forwarded-For": {"127.0.0.1"},
		"X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"127.0.0.1:8080"}, "Content-Type": {"application/json; charset=utf-8"},
		"Accept": {"*/*"}, "Via": {"1.1 Caddy"},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if refusePlaceholder(req) != nil {
			b.Fatal("refused")
		}
	}
}

// FuzzPlaceholder: whatever surrounds it and however its letters are cased,
// a placeholder is found, in a query or header and in a body alike.
func FuzzPlaceholder(f *testing.F) {
	f.Add("a=1&b=", "", uint32(0))
	f.Add("___", "_x_", uint32(0xffffffff))
	f.Add("access_token=", "&zh_CN", uint32(12345))
	f.Fuzz(func(t *testing.T, before, after string, cases uint32) {
		p := []byte(placeholder)
		for i := range p {
			if 'A' <= p[i] && p[i] <= 'Z' && cases&(1<<(i%32)) != 0 {
				p[i] += 'a' - 'A'
			}
		}
		s := before + string(p) + after
		if !holdsPlaceholder(s) || !bodyHoldsPlaceholder([]byte(s)) {
			t.Fatalf("placeholder not found in %q", s)
		}
		asciiUpper := strings.Map(func(r rune) rune {
			if 'a' <= r && r <= 'z' {
				return r - ('a' - 'A')
			}
			return r
		}, before+after)
		if !strings.Contains(asciiUpper, PlaceholderPrefix) && strings.ContainsAny(before+after, "%+") == false && holdsPlaceholder(before+after) {
			t.Fatalf("false positive on %q", before+after)
		}
	})
}
