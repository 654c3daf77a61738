package prometheus

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	selectorRe = regexp.MustCompile(`\b(caddy_wechat_[a-z_]+)\b(\{[^}]*\})?`)
	matcherRe  = regexp.MustCompile(`(\w+)\s*(?:=~|!~|!=|=)\s*"`)
	byRe       = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
)

// grafanaVars stands in for the dashboard's variables, as Grafana
// would expand them.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$__range", "5m", `"$appid"`, `".*"`)

func dashboardExprs(t *testing.T) []string {
	b, err := os.ReadFile("../../examples/prometheus/wechat.dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, grafanaVars.Replace(tg.Expr))
		}
	}
	if len(out) < 20 {
		t.Fatalf("only %d dashboard expressions", len(out))
	}
	return out
}

// A real Prometheus scrapes a running gateway (three accounts, a
// component) driven through the faults the alerts are about. Every
// metric name the rules and the dashboard use must exist there, with
// every label they aggregate or match on; every rule must evaluate
// cleanly and every dashboard query must answer with data; and the
// alerts the faults call for must fire (or be pending, for those with
// a `for`), for the faulty account only.
func TestPrometheusSeesEveryName(t *testing.T) {
	rules, err := filepath.Abs("../../examples/prometheus/wechat.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	f := newPromFake(t)
	g := startPromGateway(t, f)
	prom := startPrometheus(t, g.Admin, rules)
	promWaitFor(t, 30*time.Second, "the first scrape of the gateway", func() bool {
		return len(prom.query(t, `caddy_wechat_component_refresh_token_recoveries_total{result="failed"}`)) == 1
	})

	// The healthy account: one fetch, one call.
	if st, code := promCall(t, http.MethodGet, g.URL+"/good/cgi-bin/user/info?openid=o1", ""); st != 200 || code != 0 {
		t.Fatalf("good account: %d %d", st, code)
	}
	// A wrong secret (40125) on an unreachable store.
	if st, _ := promCall(t, http.MethodGet, g.URL+"/badsecret/cgi-bin/user/info?openid=o1", ""); st == 200 {
		t.Fatalf("bad secret answered 200")
	}
	// The store errors again once its breaker lets a probe through
	// (rate() needs two samples of the counter).
	promWaitFor(t, 20*time.Second, "a second store error", func() bool {
		promCall(t, http.MethodGet, g.URL+"/badsecret/cgi-bin/user/info?openid=o1", "")
		return len(prom.query(t, `increase(caddy_wechat_store_errors_total[1m]) > 0`)) > 0
	})
	// A ceiling of 1: one fetch, then a rejected token whose
	// replacement the ceiling refuses.
	promCall(t, http.MethodGet, g.URL+"/ceiling/cgi-bin/user/info?openid=o1", "")
	f.rejectAPI.Store(true)
	promCall(t, http.MethodGet, g.URL+"/ceiling/cgi-bin/user/info?openid=o1", "")
	f.rejectAPI.Store(false)

	// The component: a rejected push (seen by Prometheus before more
	// come, so that increase() sees them), a ticket, a component call,
	// an authorization, a call as the merchant, and a renewal that gets
	// 61023 with no recovery.
	cb := g.URL + "/wechat/component/callback"
	promCall(t, http.MethodGet, cb, "")
	promWaitFor(t, 10*time.Second, "the first rejected push in Prometheus", func() bool {
		return len(prom.query(t, `caddy_wechat_component_callbacks_total{result="method"}`)) == 1
	})
	for range 6 {
		promCall(t, http.MethodGet, cb, "")
	}
	if _, err := f.PushTicket(cb); err != nil {
		t.Fatal(err)
	}
	if st, code := promCall(t, http.MethodPost, g.URL+"/cgi-bin/component/api_create_preauthcode", `{}`); st != 200 || code != 0 {
		t.Fatalf("component call: %d %d", st, code)
	}
	if _, err := f.PushAuthorized(cb, promMerchant); err != nil {
		t.Fatal(err)
	}
	merchant := g.URL + "/authorizer/" + promMerchant + "/cgi-bin/user/info?openid=o1"
	if st, code := promCall(t, http.MethodGet, merchant, ""); st != 200 || code != 0 {
		t.Fatalf("merchant call: %d %d", st, code)
	}
	f.rejectAPI.Store(true)
	f.failAuthorize.Store(true)
	promCall(t, http.MethodGet, merchant, "")
	f.rejectAPI.Store(false)
	f.failAuthorize.Store(false)
	t.Cleanup(func() {
		if t.Failed() {
			for _, q := range []string{"caddy_wechat_component_refresh_token_recoveries_total", "caddy_wechat_component_authorizer_failures_total",
				"caddy_wechat_fetch_ceiling_refusals_total", "caddy_wechat_component_authorizer_renewals_total", "caddy_wechat_token_fetches_today"} {
				t.Logf("%s: %v", q, prom.query(t, q))
			}
		}
	})
	promWaitFor(t, 15*time.Second, "the faults scraped and rated", func() bool {
		return len(prom.query(t, `increase(caddy_wechat_component_refresh_token_recoveries_total{result="failed"}[1m]) > 0`)) == 1 &&
			len(prom.query(t, `caddy_wechat_component_authorizer_failures_total{errcode="61023"} > 0`)) == 1 &&
			len(prom.query(t, `caddy_wechat_fetch_ceiling_refusals_total > 0`)) == 1
	})

	// Every rule evaluated cleanly.
	var rg struct {
		Groups []struct {
			Rules []struct {
				Name, Query, Health, LastError, State string
			} `json:"rules"`
		} `json:"groups"`
	}
	promWaitFor(t, 10*time.Second, "every rule evaluated", func() bool {
		prom.api(t, "/api/v1/rules", nil, &rg)
		for _, g := range rg.Groups {
			for _, r := range g.Rules {
				if r.Health != "ok" {
					return false
				}
			}
		}
		return len(rg.Groups) == 1
	})
	var exprs []string
	for _, r := range rg.Groups[0].Rules {
		if r.LastError != "" {
			t.Errorf("rule %s: %s", r.Name, r.LastError)
		}
		exprs = append(exprs, r.Query)
	}
	if len(exprs) != 13 {
		t.Fatalf("prometheus loaded %d rules, want 13", len(exprs))
	}
	dash := dashboardExprs(t)

	// Names and labels.
	checked := map[string]bool{}
	for _, e := range append(slices.Clone(exprs), dash...) {
		var by []string
		for _, m := range byRe.FindAllStringSubmatch(e, -1) {
			for _, l := range strings.Split(m[1], ",") {
				by = append(by, strings.TrimSpace(l))
			}
		}
		for _, m := range selectorRe.FindAllStringSubmatch(e, -1) {
			name, sel := m[1], m[0]
			if checked[sel+strings.Join(by, ",")] {
				continue
			}
			checked[sel+strings.Join(by, ",")] = true
			all := prom.series(t, name)
			if len(all) == 0 {
				t.Errorf("%s: no such series in Prometheus (used by %q)", name, e)
				continue
			}
			if sel != name && len(prom.series(t, sel)) == 0 {
				t.Errorf("%s: no series matches (used by %q)", sel, e)
			}
			need := slices.Clone(by)
			for _, mm := range matcherRe.FindAllStringSubmatch(m[2], -1) {
				need = append(need, mm[1])
			}
			// Prometheus drops an empty label (info_type of a push
			// refused before it was read), so one series with it is enough.
			for _, l := range need {
				if !slices.ContainsFunc(all, func(s map[string]string) bool { _, ok := s[l]; return ok }) {
					t.Errorf("%s: no series has the label %q (used by %q)", name, l, e)
				}
			}
		}
	}
	if len(checked) < 25 {
		t.Errorf("only %d selectors checked", len(checked))
	}

	// Every dashboard query answers with data (a rate, once its
	// counter has two samples).
	var empty []string
	t.Cleanup(func() {
		if len(empty) > 0 {
			t.Logf("dashboard queries answering nothing: %q", empty)
		}
	})
	promWaitFor(t, 10*time.Second, "every dashboard query answering", func() bool {
		empty = empty[:0]
		for _, e := range dash {
			if len(prom.query(t, e)) == 0 {
				empty = append(empty, e)
			}
		}
		return len(empty) == 0
	})

	// The alerts the faults call for, and only those.
	type alert struct {
		Labels map[string]string `json:"labels"`
		State  string            `json:"state"`
	}
	var al struct {
		Alerts []alert `json:"alerts"`
	}
	state := func(name string, match map[string]string) string {
		for _, a := range al.Alerts {
			ok := a.Labels["alertname"] == name
			for k, v := range match {
				ok = ok && a.Labels[k] == v
			}
			if ok {
				return a.State
			}
		}
		return ""
	}
	comp := map[string]string{"component": promComponent}
	want := map[string]string{
		"WeChatFetchCeilingReached":        "firing",
		"WeChatCallbackRejectionsRising":   "firing",
		"WeChatAuthorizerRefreshTokenLost": "firing",
		"WeChatTokenFetchFailing":          "pending",
		"WeChatStoreBreakerOpen":           "pending",
		"WeChatStoreUnreachable":           "pending",
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("alerts: %+v", al.Alerts)
		}
	})
	promWaitFor(t, 15*time.Second, "the alerts", func() bool {
		prom.api(t, "/api/v1/alerts", nil, &al)
		for name, st := range want {
			if state(name, nil) != st {
				return false
			}
		}
		return true
	})
	for _, name := range []string{"WeChatCallbackRejectionsRising", "WeChatAuthorizerRefreshTokenLost"} {
		if state(name, comp) != "firing" {
			t.Errorf("%s not firing for the component", name)
		}
	}
	// Which account is which: the healthy one fires nothing.
	good := prom.query(t, `caddy_wechat_store_breaker_open == 0`)
	if len(good) != 1 {
		t.Fatalf("healthy accounts with a store: %v", good)
	}
	for _, a := range al.Alerts {
		if a.Labels["account"] == good[0].Metric["account"] {
			t.Errorf("the healthy account has an alert: %v", a)
		}
		switch a.Labels["alertname"] {
		case "WeChatScrubRedacted", "WeChatComponentTicketStale", "WeChatAuthorizerRevoked", "WeChatForceRefreshBudgetLow",
			"WeChatComponentStoreBreakerOpen", "WeChatComponentTokenFetchFailing":
			t.Errorf("an alert no fault called for: %v", a)
		}
	}
}
