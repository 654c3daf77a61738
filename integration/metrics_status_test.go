package integration

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

// metricValue finds one sample on a /metrics page; -1 when absent.
func metricValue(page, name string, labels ...string) float64 {
	for _, line := range strings.Split(page, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		var v float64
		fields := strings.Fields(line)
		if err := json.Unmarshal([]byte(fields[len(fields)-1]), &v); err == nil {
			return v
		}
	}
	return -1
}

func TestMetricsAndStatus(t *testing.T) {
	f, g := setup(t, "")
	metrics := func() string { return string(get(t, "http://"+g.Admin+"/metrics").Body) }
	before := metrics()
	// The counters are process-wide: read this appid's, before and after.
	app := `appid="` + testAppID + `"`
	okBefore := max(metricValue(before, "caddy_wechat_requests_total", app, `result="ok"`), 0)
	retryBefore := max(metricValue(before, "caddy_wechat_invalid_token_retries_total", app, `outcome="ok"`), 0)
	fetchBefore := max(metricValue(before, "caddy_wechat_token_fetches_total", app, `api="stable"`, `result="ok"`), 0)

	get(t, g.URL+"/cgi-bin/user/info?openid=o-secret-openid")
	f.RevokeAll()
	get(t, g.URL+"/cgi-bin/user/info?openid=o-secret-openid")
	page := metrics()
	if v := metricValue(page, "caddy_wechat_requests_total", app, `result="ok"`); v != okBefore+2 {
		t.Errorf("requests_total ok = %v, want %v", v, okBefore+2)
	}
	if v := metricValue(page, "caddy_wechat_invalid_token_retries_total", app, `outcome="ok"`); v != retryBefore+1 {
		t.Errorf("retries ok = %v, want %v", v, retryBefore+1)
	}
	if v := metricValue(page, "caddy_wechat_token_fetches_total", app, `api="stable"`, `result="ok"`); v != fetchBefore+2 {
		t.Errorf("token_fetches_total = %v, want %v", v, fetchBefore+2)
	}
	if v := metricValue(page, "caddy_wechat_token_expiry_seconds", `appid="`+testAppID+`"`); v < 7000 || v > 7200 {
		t.Errorf("token_expiry_seconds = %v", v)
	}
	if strings.Contains(page, "o-secret-openid") || regexp.MustCompile(`caddy_wechat_[a-z_]+\{[^}]*(path|uri|openid)=`).MatchString(page) {
		t.Error("metrics carry a URL or openid label")
	}

	// Status: read-only, no token, the state of each account.
	var st struct {
		Accounts []struct {
			AppID     string    `json:"appid"`
			TokenAPI  string    `json:"token_api"`
			FetchedAt time.Time `json:"fetched_at"`
			ExpiresAt time.Time `json:"expires_at"`
			Source    string    `json:"source"`
			LastError string    `json:"last_error"`
			Fetches   int64     `json:"fetches_today"`
			HasToken  bool      `json:"has_token"`
		} `json:"accounts"`
	}
	r := get(t, "http://"+g.Admin+"/wechat/status")
	if err := json.Unmarshal(r.Body, &st); err != nil || len(st.Accounts) != 1 {
		t.Fatalf("status: %v %s", err, r.Body)
	}
	a := st.Accounts[0]
	if a.AppID != testAppID || a.TokenAPI != "stable" || a.Source != "fetch" || !a.HasToken || a.Fetches != 2 ||
		a.ExpiresAt.Sub(a.FetchedAt) != 7200*time.Second {
		t.Errorf("status row: %+v", a)
	}
	if strings.Contains(string(r.Body), f.CurrentStable()) {
		t.Error("status shows the token")
	}
	if r := do(t, "POST", "http://"+g.Admin+"/wechat/status", nil); r.Status != 405 {
		t.Errorf("POST /wechat/status = %d, want 405", r.Status)
	}

	// A failure shows up as last_error with WeChat's errcode.
	errBefore := max(metricValue(metrics(), "caddy_wechat_token_endpoint_errors_total", app, `errcode="40164"`), 0)
	f.ExpireAll()
	f.FailTokens(40164, "")
	get(t, g.URL+"/cgi-bin/user/info")
	r = get(t, "http://"+g.Admin+"/wechat/status")
	if !strings.Contains(string(r.Body), "40164") {
		t.Errorf("status lacks the last error: %s", r.Body)
	}
	if v := metricValue(metrics(), "caddy_wechat_token_endpoint_errors_total", app, `errcode="40164"`); v != errBefore+1 {
		t.Errorf("token_endpoint_errors_total{errcode=40164} = %v, want %v", v, errBefore+1)
	}
}
