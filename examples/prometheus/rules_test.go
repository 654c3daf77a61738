// Package prometheus_test checks the example alerting rules and the
// Grafana dashboard offline: promtool's checks and unit tests, and the
// dashboard's shape and names. integration/prometheus_test.go checks
// the same names against a real Prometheus scraping a real gateway.
package prometheus_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caddy-wechat/wechat/internal/testserver"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testserver.Report()
	os.Exit(code)
}

func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin := testserver.LookPath(t, "promtool", "prometheus")
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestRulesCheck(t *testing.T) {
	out := promtool(t, "check", "rules", "wechat.rules.yml")
	if !strings.Contains(out, "SUCCESS: 13 rules found") {
		t.Errorf("promtool check rules: %s", out)
	}
}

// Every alert has a test that makes it fire on a failing series next to
// healthy ones (exp_alerts lists exactly what fires, so a healthy series
// that fired would fail), and an earlier evaluation where it is silent.
func TestRulesUnit(t *testing.T) {
	out := promtool(t, "test", "rules", "wechat.rules.test.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules: %s", out)
	}
	tests := read(t, "wechat.rules.test.yml")
	for _, a := range alerts(t) {
		if !strings.Contains(tests, "alertname: "+a+"\n      exp_alerts:\n      - exp_labels:") {
			t.Errorf("no unit test makes %s fire", a)
		}
	}
}

// A rule file broken on purpose must fail promtool: the tests above
// would otherwise pass on a promtool that checks nothing.
func TestPromtoolCatchesAWrongRule(t *testing.T) {
	dir := t.TempDir()
	rules := strings.Replace(read(t, "wechat.rules.yml"), "(caddy_wechat_component_ticket_age_seconds) > 1800", "(caddy_wechat_component_ticket_age_seconds) > 60", 1)
	if err := os.WriteFile(dir+"/wechat.rules.yml", []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/wechat.rules.test.yml", []byte(read(t, "wechat.rules.test.yml")), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := testserver.LookPath(t, "promtool", "prometheus")
	cmd := exec.Command(bin, "test", "rules", "wechat.rules.test.yml")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "WeChatComponentTicketStale") {
		t.Fatalf("a stale-ticket rule that fires on the healthy cluster passed its tests: %v\n%s", err, out)
	}
}

type dashboard struct {
	Title  string `json:"title"`
	UID    string `json:"uid"`
	Panels []struct {
		ID      int    `json:"id"`
		Title   string `json:"title"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// DashboardExprs are the dashboard's PromQL expressions.
func dashboardExprs(t *testing.T) []string {
	var d dashboard
	if err := json.Unmarshal([]byte(read(t, "wechat.dashboard.json")), &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("dashboard without uid, title or panels")
	}
	var out []string
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] || len(p.Targets) == 0 {
			t.Errorf("panel %d %q: duplicate id or no target", p.ID, p.Title)
		}
		ids[p.ID] = true
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" || strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") {
				t.Errorf("panel %q: a target without refId or with a broken expr: %q", p.Title, tg.Expr)
			}
			out = append(out, tg.Expr)
		}
	}
	return out
}

var metricName = regexp.MustCompile(`\bcaddy_wechat_[a-z_]+\b`)

func names(s string) []string {
	n := metricName.FindAllString(s, -1)
	slices.Sort(n)
	return slices.Compact(n)
}

// Every metric an alert uses is on the dashboard (an alert has a panel
// to look at), and every name either uses is in the README's tables.
func TestDashboardNames(t *testing.T) {
	dash := strings.Join(dashboardExprs(t), "\n")
	rules := read(t, "wechat.rules.yml")
	for _, n := range names(rules) {
		if !slices.Contains(names(dash), n) {
			t.Errorf("%s is used by an alert but shown on no panel", n)
		}
	}
	readme := read(t, "../../README.md")
	for _, n := range names(dash + "\n" + rules) {
		if !regexp.MustCompile("`" + n + "[`{]").MatchString(readme) {
			t.Errorf("%s is not documented in README.md", n)
		}
	}
	if len(names(dash)) < 20 {
		t.Errorf("the dashboard shows only %d metrics: %v", len(names(dash)), names(dash))
	}
}

// Every dashboard expression is valid PromQL: promtool checks them as
// recording rules, with Grafana's variables expanded as Grafana would.
func TestDashboardExprsParse(t *testing.T) {
	vars := strings.NewReplacer("$__rate_interval", "1m", "$__range", "5m", `"$appid"`, `".*"`)
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range dashboardExprs(t) {
		q, _ := json.Marshal(vars.Replace(e)) // a JSON string is a YAML string
		fmt.Fprintf(&b, "      - record: dashboard_expr_%d\n        expr: %s\n", i, q)
	}
	p := t.TempDir() + "/dashboard.rules.yml"
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, "check", "rules", p)
	// And a broken one is caught.
	bad := t.TempDir() + "/bad.rules.yml"
	os.WriteFile(bad, []byte("groups:\n  - name: x\n    rules:\n      - record: x\n        expr: \"sum by (appid (caddy_wechat_requests_total)\"\n"), 0o644)
	bin := testserver.LookPath(t, "promtool", "prometheus")
	if out, err := exec.Command(bin, "check", "rules", bad).CombinedOutput(); err == nil {
		t.Fatalf("promtool accepted broken PromQL: %s", out)
	}
}

func alerts(t *testing.T) []string {
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^\s+- alert: (\w+)$`).FindAllStringSubmatch(read(t, "wechat.rules.yml"), -1) {
		out = append(out, m[1])
	}
	if len(out) != 13 {
		t.Fatalf("%d alerts in wechat.rules.yml, want 13", len(out))
	}
	return out
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
