package integration

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddy-wechat/wechat/fakewechat"
	"github.com/caddy-wechat/wechat/internal/gateway"
)

// The gauges the alerts read: ceiling, force_refreshes today, and
// whether fetches are failing, through a real Caddy's /metrics.
func TestAccountHealthGauges(t *testing.T) {
	f, g := setup(t, "fetch_ceiling 150")
	page := func() string { return string(get(t, "http://"+g.Admin+"/metrics").Body) }
	app := `appid="` + testAppID + `"`
	if r := get(t, g.URL+"/cgi-bin/user/info?openid=o1"); r.errcode() != 0 {
		t.Fatalf("call: %s", r.Body)
	}
	p := page()
	for name, want := range map[string]float64{
		"caddy_wechat_fetch_ceiling":          150,
		"caddy_wechat_force_refreshes_today":  0,
		"caddy_wechat_token_fetch_failing":    0,
		"caddy_wechat_token_fetches_today":    1,
		"caddy_wechat_scrub_redactions_total": 0,
	} {
		if v := metricValue(p, name, app); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	f.ExpireAll()
	f.FailTokens(40164, "")
	get(t, g.URL+"/cgi-bin/user/info")
	if v := metricValue(page(), "caddy_wechat_token_fetch_failing", app); v != 1 {
		t.Errorf("token_fetch_failing after a failed fetch = %v, want 1", v)
	}
}

// The component gauges: the ticket's age restarts at a push, and the
// component token's failing flag follows its fetches.
func TestComponentHealthGauges(t *testing.T) {
	resetAccounts(t)
	t.Setenv("TEST_COMPONENT_APPID", testComponentAppID)
	t.Setenv("TEST_COMPONENT_SECRET", testComponentSecret)
	t.Setenv("TEST_COMPONENT_TOKEN", testComponentToken)
	t.Setenv("TEST_COMPONENT_AES_KEY", testComponentAESKey)
	f := newComponentFake(t, 1)
	g := startCaddy(t, componentConfig(f.URL))
	page := func() string { return string(get(t, "http://"+g.Admin+"/metrics").Body) }
	comp := `component="` + testComponentAppID + `"`
	// (An hour-old push is component/'s TestTicketAgeAnHourAfterAPush.)
	if v := metricValue(page(), "caddy_wechat_component_ticket_age_seconds", comp); v < 0 || v > 60 {
		t.Errorf("ticket age of a platform just started = %v, want its age", v)
	}
	// No ticket yet: the component token cannot be fetched.
	do(t, http.MethodPost, g.URL+"/cgi-bin/component/api_create_preauthcode", []byte(`{}`))
	if v := metricValue(page(), "caddy_wechat_component_token_fetch_failing", comp); v != 1 {
		t.Errorf("component_token_fetch_failing before a ticket = %v, want 1", v)
	}
	if _, err := f.PushTicket(g.URL + "/wechat/component/callback"); err != nil {
		t.Fatal(err)
	}
	if r := do(t, http.MethodPost, g.URL+"/cgi-bin/component/api_create_preauthcode", []byte(`{}`)); r.errcode() != 0 {
		t.Fatalf("component call after the ticket: %s", r.Body)
	}
	pg := page()
	if v := metricValue(pg, "caddy_wechat_component_ticket_age_seconds", comp); v < 0 || v > 60 {
		t.Errorf("ticket age after a push = %v, want under a minute", v)
	}
	if v := metricValue(pg, "caddy_wechat_component_token_fetch_failing", comp); v != 0 {
		t.Errorf("component_token_fetch_failing after a fetch = %v, want 0", v)
	}
	if v := metricValue(pg, "caddy_wechat_component_store_breaker_open", comp); v != -1 {
		t.Errorf("a component without a store reports a breaker: %v", v)
	}
}

// The component transport counts its redactions under the component's
// appid, for a component call and for an authorizer's call alike.
func TestComponentScrubRedactionsCounted(t *testing.T) {
	resetAccounts(t)
	t.Setenv("TEST_COMPONENT_APPID", testComponentAppID)
	t.Setenv("TEST_COMPONENT_SECRET", testComponentSecret)
	t.Setenv("TEST_COMPONENT_TOKEN", testComponentToken)
	t.Setenv("TEST_COMPONENT_AES_KEY", testComponentAESKey)
	fake := fakewechat.New(fakewechat.Options{Component: fakewechat.ComponentOptions{
		AppID: testComponentAppID, Secret: testComponentSecret, Token: testComponentToken, EncodingAESKey: testComponentAESKey}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/echo_token") { // a misbehaving upstream
			q := r.URL.Query()
			tok := q.Get("component_access_token") + q.Get("access_token")
			w.Header().Set("X-Echo", "token="+tok)
			io.WriteString(w, `{"errcode":0,"echo":"`+tok+`"}`)
			return
		}
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	g := startCaddy(t, componentConfig(srv.URL))
	cb := g.URL + "/wechat/component/callback"
	if _, err := fake.PushTicket(cb); err != nil {
		t.Fatal(err)
	}
	if _, err := fake.PushAuthorized(cb, "wxmerchantscrub001"); err != nil {
		t.Fatal(err)
	}
	page := func() string { return string(get(t, "http://"+g.Admin+"/metrics").Body) }
	comp := `appid="` + testComponentAppID + `"`
	body0 := max(metricValue(page(), "caddy_wechat_scrub_redactions_total", comp, `part="body"`), 0)
	head0 := max(metricValue(page(), "caddy_wechat_scrub_redactions_total", comp, `part="header"`), 0)
	for _, u := range []string{g.URL + "/cgi-bin/component/echo_token", g.URL + "/authorizer/wxmerchantscrub001/cgi-bin/echo_token"} {
		r := do(t, http.MethodPost, u, []byte(`{}`))
		if !strings.Contains(string(r.Body), gateway.RedactedMark) || !strings.Contains(r.Header.Get("X-Echo"), gateway.RedactedMark) {
			t.Fatalf("%s: not scrubbed: %s %v", u, r.Body, r.Header)
		}
	}
	p := page()
	if v := metricValue(p, "caddy_wechat_scrub_redactions_total", comp, `part="body"`); v != body0+2 {
		t.Errorf("body redactions = %v, want %v", v, body0+2)
	}
	if v := metricValue(p, "caddy_wechat_scrub_redactions_total", comp, `part="header"`); v != head0+2 {
		t.Errorf("header redactions = %v, want %v", v, head0+2)
	}
}
