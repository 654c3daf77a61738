package fakewechat

import (
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/wxcrypto"
)

const (
	compAppID = "wxCOMPONENT"
	compKey   = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	compToken = "cbtoken"
)

func newComponentEnv(t *testing.T, rotate int) *env {
	t.Helper()
	clk := &clock{t: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
	fw := New(Options{
		AppID: "wxAPP", Secret: "SECRET", Now: clk.Now,
		Component: ComponentOptions{AppID: compAppID, Secret: "CSECRET", Token: compToken, EncodingAESKey: compKey, RotateEvery: rotate},
	})
	hs := httptest.NewServer(fw)
	t.Cleanup(hs.Close)
	return &env{t, fw, hs, clk}
}

// event is a decrypted push as a platform's callback sees it.
type event struct {
	AppID                                    string `xml:"AppId"`
	InfoType, ComponentVerifyTicket          string
	AuthorizerAppid, AuthorizationCode       string
	CreateTime, AuthorizationCodeExpiredTime int64
	Query                                    url.Values
}

// callback is a platform's 授权事件接收URL built on wxcrypto, as the
// gateway's handler will be.
func callback(t *testing.T) (*httptest.Server, func() []event) {
	c, err := wxcrypto.New(compToken, compKey, compAppID)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []event
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		body, _ := io.ReadAll(r.Body)
		plain, err := c.Open(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), body)
		if err != nil || q.Get("encrypt_type") != "aes" || r.Method != http.MethodPost {
			http.Error(w, "bad push", http.StatusBadRequest)
			return
		}
		var ev event
		if err := xml.Unmarshal(plain, &ev); err != nil {
			http.Error(w, "bad xml", http.StatusBadRequest)
			return
		}
		ev.Query = q
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
		_, _ = io.WriteString(w, "success")
	}))
	t.Cleanup(hs.Close)
	return hs, func() []event { mu.Lock(); defer mu.Unlock(); return append([]event(nil), got...) }
}

func (e *env) post(path string, v any) resp {
	e.t.Helper()
	b, _ := json.Marshal(v)
	return e.do("POST", path, string(b))
}

func (e *env) componentToken(ticket string) resp {
	e.t.Helper()
	return e.post("/cgi-bin/component/api_component_token", map[string]string{
		"component_appid": compAppID, "component_appsecret": "CSECRET", "component_verify_ticket": ticket})
}

func TestComponentTicketPushAndToken(t *testing.T) {
	e := newComponentEnv(t, 0)
	cb, events := callback(t)
	tk, err := e.fw.PushTicket(cb.URL + "/wechat/callback")
	if err != nil {
		t.Fatal(err)
	}
	ev := events()
	if len(ev) != 1 || ev[0].InfoType != "component_verify_ticket" || ev[0].ComponentVerifyTicket != tk ||
		ev[0].AppID != compAppID || ev[0].CreateTime != e.clk.Now().Unix() || ev[0].Query.Get("timestamp") == "" {
		t.Fatalf("pushed %+v", ev)
	}
	wantCode(t, "unknown ticket", e.componentToken("ticket@@@nope").code(), 61006)
	wantCode(t, "no ticket", e.componentToken("").code(), 61006)
	r := e.componentToken(tk)
	ct := r.str("component_access_token")
	if !strings.HasPrefix(ct, "CMP_") || r.m["expires_in"].(float64) != 7200 {
		t.Fatalf("component token: %s", r.body)
	}
	bad := e.post("/cgi-bin/component/api_component_token", map[string]string{
		"component_appid": compAppID, "component_appsecret": "x", "component_verify_ticket": tk})
	wantCode(t, "bad component secret", bad.code(), 40125)

	// A superseded ticket works for its 12 h; then 61005.
	tk2, _ := e.fw.PushTicket(cb.URL)
	e.clk.Add(11 * time.Hour)
	wantCode(t, "older ticket within 12h", e.componentToken(tk).code(), 0)
	e.clk.Add(time.Hour)
	wantCode(t, "ticket past 12h", e.componentToken(tk).code(), 61005)
	if e.fw.LatestTicket() != tk2 || e.fw.Fetches("api_component_token") != 6 || e.fw.Fetches("push") != 2 {
		t.Fatalf("latest %q, api_component_token %d, push %d", e.fw.LatestTicket(), e.fw.Fetches("api_component_token"), e.fw.Fetches("push"))
	}

	// A callback that does not say "success" is an error.
	if _, err := e.fw.PushTicket(e.hs.URL + "/not-a-callback"); err == nil {
		t.Fatal("push to a non-callback succeeded")
	}
}

func TestComponentAuthFlow(t *testing.T) {
	e := newComponentEnv(t, 0)
	ct := e.componentToken(e.fw.NewTicket()).str("component_access_token")
	q := "?component_access_token=" + url.QueryEscape(ct)

	pre := e.post("/cgi-bin/component/api_create_preauthcode"+q, map[string]string{"component_appid": compAppID})
	if !strings.HasPrefix(pre.str("pre_auth_code"), "preauthcode@@@") || pre.m["expires_in"].(float64) != 1800 {
		t.Fatalf("preauthcode: %s", pre.body)
	}
	wantCode(t, "no component token", e.post("/cgi-bin/component/api_create_preauthcode", map[string]string{"component_appid": compAppID}).code(), 41018)
	app := e.classic()
	wantCode(t, "access_token as component token", e.post("/cgi-bin/component/api_create_preauthcode?component_access_token="+app, map[string]string{"component_appid": compAppID}).code(), 40001)

	cb, events := callback(t)
	code, err := e.fw.PushAuthorized(cb.URL, "wxMERCHANT1")
	if err != nil {
		t.Fatal(err)
	}
	if ev := events(); len(ev) != 1 || ev[0].InfoType != "authorized" || ev[0].AuthorizationCode != code ||
		ev[0].AuthorizerAppid != "wxMERCHANT1" || ev[0].AuthorizationCodeExpiredTime != e.clk.Now().Add(10*time.Minute).Unix() {
		t.Fatalf("authorized event: %+v", ev)
	}
	r := e.post("/cgi-bin/component/api_query_auth"+q, map[string]string{"component_appid": compAppID, "authorization_code": code})
	info, _ := r.m["authorization_info"].(map[string]any)
	if info["authorizer_appid"] != "wxMERCHANT1" || !strings.HasPrefix(info["authorizer_access_token"].(string), "AUT_") ||
		info["authorizer_refresh_token"] != e.fw.RefreshTokenOf("wxMERCHANT1") || info["expires_in"].(float64) != 7200 || info["func_info"] == nil {
		t.Fatalf("query_auth: %s", r.body)
	}
	wantCode(t, "code used twice", e.post("/cgi-bin/component/api_query_auth"+q, map[string]string{"component_appid": compAppID, "authorization_code": code}).code(), 61009)
	late := e.fw.Authorize("wxMERCHANT2")
	e.clk.Add(10 * time.Minute)
	wantCode(t, "code after 10 min", e.post("/cgi-bin/component/api_query_auth"+q, map[string]string{"component_appid": compAppID, "authorization_code": late}).code(), 61010)

	// The authorizer token is an access_token for that authorizer.
	at := info["authorizer_access_token"].(string)
	echo := e.do("GET", "/cgi-bin/user/info?openid=o1&access_token="+at, "")
	if echo.code() != 0 || echo.m["caddy_wechat_fake"].(map[string]any)["token_kind"] != "authorizer" {
		t.Fatalf("API call with the authorizer token: %s", echo.body)
	}
	if _, err := e.fw.PushUpdateAuthorized(cb.URL, "wxMERCHANT1"); err != nil {
		t.Fatal(err)
	}
	if err := e.fw.PushUnauthorized(cb.URL, "wxMERCHANT1"); err != nil {
		t.Fatal(err)
	}
	ev := events()
	if len(ev) != 3 || ev[1].InfoType != "updateauthorized" || ev[1].AuthorizationCode == "" || ev[2].InfoType != "unauthorized" || ev[2].AuthorizerAppid != "wxMERCHANT1" {
		t.Fatalf("events: %+v", ev)
	}
	wantCode(t, "revoked authorizer's token", e.call(at), 40001)
}

func (e *env) authorizerToken(ct, appid, rt string) resp {
	e.t.Helper()
	return e.post("/cgi-bin/component/api_authorizer_token?component_access_token="+url.QueryEscape(ct), map[string]string{
		"component_appid": compAppID, "authorizer_appid": appid, "authorizer_refresh_token": rt})
}

func TestAuthorizerTokenRotationAndRevocation(t *testing.T) {
	e := newComponentEnv(t, 2)
	ct := e.componentToken(e.fw.NewTicket()).str("component_access_token")
	a := e.fw.AddAuthorizers(2)
	rt0 := a[0].RefreshToken

	r1 := e.authorizerToken(ct, a[0].AppID, rt0)
	t1 := r1.str("authorizer_access_token")
	if !strings.HasPrefix(t1, "AUT_") || r1.str("authorizer_refresh_token") != rt0 || r1.m["expires_in"].(float64) != 7200 {
		t.Fatalf("first refresh: %s", r1.body)
	}
	r2 := e.authorizerToken(ct, a[0].AppID, rt0) // the 2nd call rotates
	rt1 := r2.str("authorizer_refresh_token")
	if rt1 == rt0 || rt1 != e.fw.RefreshTokenOf(a[0].AppID) || r2.str("authorizer_access_token") == t1 {
		t.Fatalf("rotation: %s", r2.body)
	}
	wantCode(t, "old token in its overlap", e.call(t1), 0)
	e.clk.Add(30 * time.Second)
	if r := e.authorizerToken(ct, a[0].AppID, rt0); r.code() != 0 || r.str("authorizer_refresh_token") != rt1 {
		t.Fatalf("replaced refresh token within the grace: %s", r.body)
	}
	e.clk.Add(31 * time.Second)
	wantCode(t, "replaced refresh token after the grace", e.authorizerToken(ct, a[0].AppID, rt0).code(), 61023)
	wantCode(t, "unknown refresh token", e.authorizerToken(ct, a[0].AppID, "refreshtoken@@@x").code(), 61023)
	wantCode(t, "new refresh token", e.authorizerToken(ct, a[0].AppID, rt1).code(), 0)
	wantCode(t, "unknown authorizer", e.authorizerToken(ct, "wxNOBODY", rt1).code(), 61003)
	wantCode(t, "without component token", e.authorizerToken("", a[1].AppID, a[1].RefreshToken).code(), 41018)

	info := e.post("/cgi-bin/component/api_get_authorizer_info?component_access_token="+ct,
		map[string]string{"component_appid": compAppID, "authorizer_appid": a[1].AppID})
	if ai, _ := info.m["authorization_info"].(map[string]any); ai["authorizer_refresh_token"] != a[1].RefreshToken {
		t.Fatalf("authorizer info: %s", info.body)
	}
	e.fw.Unauthorize(a[1].AppID)
	wantCode(t, "revoked: refresh", e.authorizerToken(ct, a[1].AppID, a[1].RefreshToken).code(), 61003)
	wantCode(t, "revoked: info", e.post("/cgi-bin/component/api_get_authorizer_info?component_access_token="+ct,
		map[string]string{"component_appid": compAppID, "authorizer_appid": a[1].AppID}).code(), 61003)

	e.clk.Add(2 * time.Hour)
	wantCode(t, "expired component token", e.authorizerToken(ct, a[0].AppID, rt1).code(), 42001)
	if n := e.fw.Fetches("api_authorizer_token"); n != 10 {
		t.Fatalf("Fetches(api_authorizer_token) = %d, want 10", n)
	}
	if e.fw.Fetches("api_get_authorizer_info") != 2 || e.fw.Authorizers() != 1 {
		t.Fatalf("info calls %d, authorizers %d", e.fw.Fetches("api_get_authorizer_info"), e.fw.Authorizers())
	}

	// Component rids belong to the component; authorizer rids to the authorizer.
	cr := e.fw.Records("/cgi-bin/component/api_authorizer_token")
	if len(cr) == 0 || cr[0].Owner != "component:"+compAppID || !strings.Contains(cr[0].Body, rt0) {
		t.Fatalf("component record: %+v", cr)
	}
	at := e.fw.CurrentAuthorizerToken(a[0].AppID)
	e.clk.Add(-2 * time.Hour)
	g := e.post("/cgi-bin/openapi/rid/get?access_token="+at, map[string]string{"rid": cr[0].RID})
	wantCode(t, "authorizer reads a component rid", g.code(), 76003)
}

func TestTenThousandAuthorizers(t *testing.T) {
	e := newComponentEnv(t, 0)
	before := runtime.NumGoroutine()
	creds := e.fw.AddAuthorizers(10000)
	if len(creds) != 10000 || e.fw.Authorizers() != 10000 || creds[9999].AppID != "wxfakeauth010000" {
		t.Fatalf("%d creds, %d authorizers", len(creds), e.fw.Authorizers())
	}
	if runtime.NumGoroutine() > before+2 {
		t.Fatalf("goroutines %d -> %d", before, runtime.NumGoroutine())
	}
	// Issue a token for each without HTTP: the map path must stay O(1).
	e.fw.mu.Lock()
	now := e.fw.opts.Now()
	for _, c := range creds {
		e.fw.issueAuthorizerToken(e.fw.open.auths[c.AppID], c.AppID, now)
	}
	e.fw.mu.Unlock()
	ct := e.componentToken(e.fw.NewTicket()).str("component_access_token")
	r := e.authorizerToken(ct, creds[4321].AppID, creds[4321].RefreshToken)
	wantCode(t, "authorizer 4322 of 10000", r.code(), 0)
	wantCode(t, "its token", e.call(r.str("authorizer_access_token")), 0)
}

func TestStartTicketPush(t *testing.T) {
	e := newComponentEnv(t, 0)
	cb, events := callback(t)
	stop := e.fw.StartTicketPush(cb.URL, time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for len(events()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	stop()
	if ev := events(); len(ev) == 0 || ev[0].ComponentVerifyTicket == "" {
		t.Fatal("no ticket pushed")
	}
}

func TestComponentHelpersNeedComponent(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	New(Options{AppID: "a", Secret: "s"}).NewTicket()
}

func TestLatestTicketOnly(t *testing.T) {
	e := newComponentEnv(t, 0)
	e.fw.opts.Component.LatestTicketOnly = true
	t1 := e.fw.NewTicket()
	wantCode(t, "latest ticket", e.componentToken(t1).code(), 0)
	t2 := e.fw.NewTicket()
	wantCode(t, "superseded ticket", e.componentToken(t1).code(), 61006)
	wantCode(t, "new latest", e.componentToken(t2).code(), 0)
}

// BenchmarkAuthorizerToken measures one api_authorizer_token call among
// 10,000 authorizers, without HTTP.
func BenchmarkAuthorizerToken(b *testing.B) {
	fw := New(Options{Component: ComponentOptions{AppID: compAppID, Secret: "CSECRET", Token: compToken, EncodingAESKey: compKey}})
	creds := fw.AddAuthorizers(10000)
	rec := httptest.NewRecorder()
	body, _ := json.Marshal(map[string]string{"component_appid": compAppID, "component_appsecret": "CSECRET", "component_verify_ticket": fw.NewTicket()})
	fw.ServeHTTP(rec, httptest.NewRequest("POST", "/cgi-bin/component/api_component_token", strings.NewReader(string(body))))
	var ans map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &ans)
	path := "/cgi-bin/component/api_authorizer_token?component_access_token=" + url.QueryEscape(ans["component_access_token"].(string))
	reqs := make([]string, len(creds))
	for i, c := range creds {
		b, _ := json.Marshal(map[string]string{"component_appid": compAppID, "authorizer_appid": c.AppID, "authorizer_refresh_token": c.RefreshToken})
		reqs[i] = string(b)
	}
	for i := 0; b.Loop(); i++ {
		rec := httptest.NewRecorder()
		fw.ServeHTTP(rec, httptest.NewRequest("POST", path, strings.NewReader(reqs[i%len(reqs)])))
		if rec.Code != 200 || strings.Contains(rec.Body.String(), "errcode") {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}
