package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// logLines are the JSON lines of a Caddy log file with the given event.
func logLines(t *testing.T, path, event string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(readFile(t, path), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m[credential.FieldEvent] == event {
			out = append(out, m)
		}
	}
	return out
}

// onlyAccount is the label of the one account /wechat/status reports.
func onlyAccount(t *testing.T, g *runningCaddy) string {
	t.Helper()
	labels := statusAccounts(t, g)
	if len(labels) != 1 {
		t.Fatalf("status reports accounts %v, want one", labels)
	}
	return labels[0]
}

// Through a real Caddy, the engine's lines name the account (the label
// of /metrics and /wechat/status) and the store's name the appid; the
// open platform's name the component.
func TestLogContractThroughCaddy(t *testing.T) {
	f, g := setup(t, "memcache 127.0.0.1:1")
	if r := get(t, g.URL+"/cgi-bin/user/info?openid=o1"); r.errcode() != 0 {
		t.Fatalf("call: %s", r.Body)
	}
	label := onlyAccount(t, g)
	fetch := logLines(t, g.LogFile, credential.EventFetch)
	if len(fetch) != 1 {
		t.Fatalf("%d fetch lines, want 1", len(fetch))
	}
	for k, want := range map[string]any{"appid": testAppID, "account": label, "credential": "access_token", "source": "fetch", "expires_in": 7200.0, "force_refresh": false} {
		if fetch[0][k] != want {
			t.Errorf("fetch line: %s = %v, want %v (%v)", k, fetch[0][k], want, fetch[0])
		}
	}
	brk := logLines(t, g.LogFile, credential.EventStoreBreaker)
	if len(brk) == 0 || brk[0]["state"] != "open" || brk[0]["appid"] != testAppID || brk[0]["account"] != label {
		t.Errorf("store breaker line: %v", brk)
	}
	if strings.Contains(readFile(t, g.LogFile), f.CurrentStable()) || strings.Contains(readFile(t, g.LogFile), testSecret) {
		t.Error("the log holds the token or the secret")
	}

	cf, g := startComponent(t, 1, nil)
	if _, err := cf.PushTicket(g.URL + "/wechat/component/callback"); err != nil {
		t.Fatal(err)
	}
	if r := do(t, http.MethodPost, g.URL+"/cgi-bin/component/api_create_preauthcode", []byte(`{}`)); r.errcode() != 0 {
		t.Fatalf("component call: %s", r.Body)
	}
	fetch = logLines(t, g.LogFile, credential.EventFetch)
	if len(fetch) != 1 || fetch[0]["component"] != testComponentAppID || fetch[0]["credential"] != "component_access_token" {
		t.Errorf("component fetch lines: %v", fetch)
	}
}

// The quota warning, once a day, with its numbers and the account.
func TestLogQuotaWarningThroughCaddy(t *testing.T) {
	_, g := setup(t, "token_api classic\n\t\tquota_warn 0.0001")
	for range 2 {
		if r := get(t, g.URL+"/cgi-bin/user/info?openid=o1"); r.errcode() != 0 {
			t.Fatalf("call: %s", r.Body)
		}
	}
	label := onlyAccount(t, g)
	lines := logLines(t, g.LogFile, credential.EventQuotaWarning)
	if len(lines) != 1 {
		t.Fatalf("%d quota_warning lines, want 1", len(lines))
	}
	for k, want := range map[string]any{"appid": testAppID, "account": label, "token_api": "classic", "used": 1.0, "quota": 2000.0} {
		if lines[0][k] != want {
			t.Errorf("quota_warning: %s = %v, want %v (%v)", k, lines[0][k], want, lines[0])
		}
	}
	if d, _ := lines[0]["day"].(string); len(d) != len("2006-01-02") {
		t.Errorf("quota_warning day: %v", lines[0]["day"])
	}
}
