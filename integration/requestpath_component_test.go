package integration

import (
	"bytes"
	"compress/flate"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-wechat/wechat"
	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/caddyserver/caddy/v2"
)

// The open platform's transport goes through the same request loop as
// the account's (requestPath). Each test here attacks, through a real
// Caddy, a rule that once held on the account's path only.

const pathMerchant = "wxmerchant0000042"

// pathFake is the component fake behind a recorder of the headers and
// query of the last API call, with a hook for answers the fake never
// gives (a forced deflate).
type pathFake struct {
	*componentFake
	URL string

	mu      sync.Mutex
	hdr     http.Header
	query   string
	deflate bool // answer every API call deflate-compressed, asked or not
}

func newPathFake(t *testing.T) *pathFake {
	f := &pathFake{componentFake: newComponentFake(t, 0)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api := !strings.Contains(r.URL.Path, "/component/api_") // not a token call of the gateway's own
		f.mu.Lock()
		if api {
			f.hdr, f.query = r.Header.Clone(), r.URL.RawQuery
		}
		deflate := f.deflate && api
		f.mu.Unlock()
		if !deflate {
			proxyTo(w, r, f.componentFake.URL)
			return
		}
		rec := httptest.NewRecorder()
		r.Header.Del("Accept-Encoding")
		proxyTo(rec, r, f.componentFake.URL)
		var z bytes.Buffer
		zw, _ := flate.NewWriter(&z, flate.BestSpeed)
		zw.Write(rec.Body.Bytes())
		zw.Close()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "deflate")
		w.Write(z.Bytes())
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// proxyTo forwards r to base and copies the answer into w.
func proxyTo(w http.ResponseWriter, r *http.Request, base string) {
	out, _ := http.NewRequest(r.Method, base+r.URL.RequestURI(), r.Body)
	out.Header = r.Header.Clone()
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

func (f *pathFake) last() (http.Header, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hdr, f.query
}

// componentGateway starts Caddy in front of f with the ticket pushed and
// pathMerchant authorized.
func componentGateway(t *testing.T, f *pathFake) *runningCaddy {
	t.Helper()
	resetAccounts(t)
	t.Setenv("TEST_COMPONENT_APPID", testComponentAppID)
	t.Setenv("TEST_COMPONENT_SECRET", testComponentSecret)
	t.Setenv("TEST_COMPONENT_TOKEN", testComponentToken)
	t.Setenv("TEST_COMPONENT_AES_KEY", testComponentAESKey)
	g := startCaddy(t, componentConfig(f.URL))
	t.Cleanup(func() { caddy.Stop() })
	cb := g.URL + "/wechat/component/callback"
	if _, err := f.PushTicket(cb); err != nil {
		t.Fatal(err)
	}
	if _, err := f.PushAuthorized(cb, pathMerchant); err != nil {
		t.Fatal(err)
	}
	return g
}

// A caller asking for deflate, br or zstd gets at most gzip asked of
// WeChat, and an upstream that answers deflate anyway is refused: its
// rid/get answer, with the merchant's live token in request_url, never
// reaches the caller compressed past the scrub.
func TestComponentAcceptEncodingNarrowed(t *testing.T) {
	f := newPathFake(t)
	g := componentGateway(t, f)
	r := do(t, http.MethodGet, g.URL+"/cgi-bin/user/info?openid=o1", nil, wechat.AuthorizerHeader, pathMerchant, "Accept-Encoding", "deflate, br, zstd")
	if r.errcode() != 0 {
		t.Fatalf("call: %d %s", r.Status, r.Body)
	}
	if h, _ := f.last(); h.Get("Accept-Encoding") != "" && h.Get("Accept-Encoding") != "gzip" {
		t.Errorf("upstream was asked for Accept-Encoding %q; want gzip at most, the one encoding the scrub reads", h.Get("Accept-Encoding"))
	}
	tok := f.CurrentAuthorizerToken(pathMerchant)
	recs := f.Records("/cgi-bin/user/info")
	rid := recs[len(recs)-1].RID
	f.mu.Lock()
	f.deflate = true
	f.mu.Unlock()
	for _, form := range []struct{ url, hdr string }{
		{g.URL + "/cgi-bin/openapi/rid/get", pathMerchant},
		{g.URL + "/authorizer/" + pathMerchant + "/cgi-bin/openapi/rid/get", ""},
	} {
		hdr := []string{"Accept-Encoding", "deflate"}
		if form.hdr != "" {
			hdr = append(hdr, wechat.AuthorizerHeader, form.hdr)
		}
		a := do(t, http.MethodPost, form.url, []byte(`{"rid":"`+rid+`"}`), hdr...)
		plain := a.Body
		if zr := flate.NewReader(bytes.NewReader(a.Body)); zr != nil {
			if b, err := io.ReadAll(zr); err == nil {
				plain = b
			}
		}
		if bytes.Contains(plain, []byte(tok)) || bytes.Contains(a.Body, []byte(tok)) {
			t.Fatalf("%s: a deflate rid/get answer carried the authorizer's token to the caller", form.url)
		}
		if a.Status != http.StatusBadGateway {
			t.Errorf("%s: an unreadable encoding answered %d; want 502", form.url, a.Status)
		}
	}
}

// The caller's Authorization, Proxy-Authorization and Cookie (the
// README's basic_auth guard) never reach WeChat through the open
// platform, in either form of naming the authorizer, nor on the
// component's own calls.
func TestComponentCallerCredentialsStripped(t *testing.T) {
	f := newPathFake(t)
	g := componentGateway(t, f)
	for _, u := range []string{
		g.URL + "/authorizer/" + pathMerchant + "/cgi-bin/user/info?openid=o1",
		g.URL + "/cgi-bin/component/api_get_authorizer_list",
		g.URL + "/sns/userinfo?access_token=USER&openid=o1",
	} {
		do(t, http.MethodGet, u, nil, "Authorization", "Basic YWxpY2U6cGFzcw==", "Proxy-Authorization", "Basic eA==", "Cookie", "session=s3cr3t")
		h, _ := f.last()
		for _, k := range gateway.CallerCredentialHeaders {
			if h.Get(k) != "" {
				t.Errorf("%s: the caller's %s reached WeChat", u, k)
			}
		}
		if h.Get(wechat.AuthorizerHeader) != "" {
			t.Errorf("%s: the authorizer header reached WeChat", u)
		}
	}
	if rep := f.Headers(); rep.Authorization != 0 || rep.Cookie != 0 {
		t.Errorf("the fake saw caller credentials: %+v", rep)
	}
}

// rid/get named by path prefix is judged on the path sent, so the
// field-by-field redaction runs: a merchant's AppSecret in a call's body
// and the authorizer's token in its query do not come back.
func TestComponentRidGetByPathPrefix(t *testing.T) {
	f := newPathFake(t)
	g := componentGateway(t, f)
	const merchantSecret = "merchant-own-appsecret-0a1b2c3d4e5f"
	prefix := g.URL + "/authorizer/" + pathMerchant
	r := do(t, http.MethodPost, prefix+"/cgi-bin/message/custom/send?openid=o1", []byte(`{"touser":"o1","appid":"`+pathMerchant+`","secret":"`+merchantSecret+`"}`))
	if r.errcode() != 0 {
		t.Fatalf("call: %s", r.Body)
	}
	tok := f.CurrentAuthorizerToken(pathMerchant)
	recs := f.Records("/cgi-bin/message/custom/send")
	if len(recs) == 0 {
		t.Fatal("the fake recorded no call")
	}
	rid := recs[len(recs)-1].RID
	a := do(t, http.MethodPost, prefix+"/cgi-bin/openapi/rid/get", []byte(`{"rid":"`+rid+`"}`))
	if bytes.Contains(a.Body, []byte(merchantSecret)) || bytes.Contains(a.Body, []byte(tok)) {
		t.Fatalf("rid/get by path prefix read a credential back: %s", a.Body)
	}
	req, _ := a.JSON["request"].(map[string]any)
	if a.errcode() != 0 || req == nil || !strings.Contains(req["request_url"].(string), "openid=o1") ||
		!strings.Contains(req["request_body"].(string), gateway.RedactedMark) {
		t.Errorf("rid/get lost its purpose or was not redacted field by field: %s", a.Body)
	}
}

// A component token WeChat will not issue for a quota (45009) is
// "unavailable for now", 503, as on the account's path: SDKs retry a 503
// and not a 502.
func TestComponentQuotaIs503(t *testing.T) {
	f := newPathFake(t)
	resetAccounts(t)
	t.Setenv("TEST_COMPONENT_APPID", testComponentAppID)
	t.Setenv("TEST_COMPONENT_SECRET", testComponentSecret)
	t.Setenv("TEST_COMPONENT_TOKEN", testComponentToken)
	t.Setenv("TEST_COMPONENT_AES_KEY", testComponentAESKey)
	g := startCaddy(t, componentConfig(f.URL))
	t.Cleanup(func() { caddy.Stop() })
	if _, err := f.PushTicket(g.URL + "/wechat/component/callback"); err != nil {
		t.Fatal(err)
	}
	f.FailTokens(45009, "reach max api daily quota limit rid: 1")
	r := do(t, http.MethodGet, g.URL+"/cgi-bin/component/api_get_authorizer_list", nil)
	if r.Status != http.StatusServiceUnavailable || r.errcode() != 45009 || strings.Contains(string(r.Body), "rid:") {
		t.Fatalf("quota on the component token: %d %s; want 503 errcode 45009, no rid", r.Status, r.Body)
	}
}

// Web OAuth and login on behalf of an authorizer are component calls:
// the gateway adds its component_appid and component_access_token, drops
// the caller's copies, and names the authorizer from the path prefix.
func TestComponentSNSCalls(t *testing.T) {
	f := newPathFake(t)
	g := componentGateway(t, f)
	compTok := func(q string) string {
		for part := range strings.SplitSeq(q, "&") {
			if v, ok := strings.CutPrefix(part, "component_access_token="); ok {
				return v
			}
		}
		return ""
	}
	for _, tc := range []struct{ url, wantAppID string }{
		{g.URL + "/sns/oauth2/component/access_token?appid=" + pathMerchant + "&code=C1&grant_type=authorization_code&component_appid=wxevil&component_access_token=stolen", pathMerchant},
		{g.URL + "/authorizer/" + pathMerchant + "/sns/oauth2/component/refresh_token?appid=wxevil&grant_type=refresh_token&refresh_token=R", pathMerchant},
		{g.URL + "/sns/component/jscode2session?appid=" + pathMerchant + "&js_code=J&grant_type=authorization_code", pathMerchant},
	} {
		do(t, http.MethodGet, tc.url, nil)
		_, q := f.last()
		if strings.Count(q, "component_appid=") != 1 || !strings.Contains(q, "component_appid="+testComponentAppID) {
			t.Errorf("%s: upstream query %q; want exactly our component_appid", tc.url, q)
		}
		if tok := compTok(q); tok == "" || tok == "stolen" || strings.Count(q, "component_access_token=") != 1 {
			t.Errorf("%s: upstream query %q; want exactly the gateway's component_access_token", tc.url, q)
		}
		if strings.Count(q, "appid="+tc.wantAppID) != 1 || strings.Contains(q, "wxevil") {
			t.Errorf("%s: upstream query %q; want appid=%s once", tc.url, q, tc.wantAppID)
		}
	}
}
