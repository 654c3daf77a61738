package wechat

import (
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestSecretsNeverLeak drives every path that touches a credential (cold
// fetch, classic fetch with the secret in its URL, replay after 40001,
// force_refresh, failing token endpoint whose errmsg quotes the secret,
// login calls that carry the secret upstream) with Caddy at DEBUG, then
// looks for the secret and every token in the logs, the error bodies, the
// admin API's /config/ and /metrics.
func TestSecretsNeverLeak(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	var mu sync.Mutex
	seen := map[string]bool{}
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if tok := r.URL.Query().Get("access_token"); tok != "" {
			mu.Lock()
			seen[tok] = true
			mu.Unlock()
		}
		return false
	})
	g := startCaddy(t, `{
	admin 127.0.0.1:%[2]d
	log {
		output file %[3]s
		level DEBUG
	}
}
http://127.0.0.1:%[1]d {
	log {
		output file %[3]s
		level DEBUG
	}
	handle_path /s/* {
		wechat {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream `+f.URL+`
		}
	}
	handle_path /c/* {
		wechat {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream `+f.URL+`
			token_api classic
		}
	}
}
`)
	var bodies []string
	keep := func(r result) { bodies = append(bodies, string(r.Body)) }

	keep(get(t, g.URL+"/s/cgi-bin/user/info?openid=o1"))
	keep(get(t, g.URL+"/c/cgi-bin/user/info?openid=o1&access_token=zzz"))
	f.RevokeAll()
	keep(get(t, g.URL+"/s/cgi-bin/user/info?openid=o1"))
	keep(get(t, g.URL+"/c/cgi-bin/user/info?openid=o1"))
	f.rejectToken(f.CurrentStable()) // forces a force_refresh
	keep(get(t, g.URL+"/s/cgi-bin/user/info?openid=o1"))
	keep(get(t, g.URL+"/s/sns/jscode2session?js_code=abc&grant_type=authorization_code&secret=client"))
	keep(get(t, g.URL+"/s/cgi-bin/token?grant_type=client_credential"))
	f.ExpireAll()
	f.FailTokens(40125, "invalid appsecret "+testSecret+" rid: 1")
	keep(get(t, g.URL+"/c/cgi-bin/user/info")) // 42001, then the refetch fails
	r := get(t, g.URL+"/c/cgi-bin/user/info")
	keep(r)
	if r.errcode() != 40125 {
		t.Errorf("want 40125 from the failing token endpoint, got %s", r.Body)
	}
	f.FailTokens(0, "")

	config := get(t, "http://"+g.Admin+"/config/")
	status := get(t, "http://"+g.Admin+"/wechat/status")
	metrics := get(t, "http://"+g.Admin+"/metrics")
	if !strings.Contains(string(metrics.Body), "caddy_wechat_token_fetches_total") {
		t.Error("/metrics lacks caddy_wechat_token_fetches_total")
	}
	if !strings.Contains(string(config.Body), "{env.TEST_WECHAT_SECRET}") {
		t.Errorf("/config/ should show the placeholder: %s", config.Body)
	}
	logs := readFile(t, g.LogFile)
	if !strings.Contains(logs, `"level":"debug"`) || !strings.Contains(logs, "access_token fetched") {
		t.Fatalf("debug logging did not happen; the grep below would prove nothing:\n%.2000s", logs)
	}

	mu.Lock()
	secrets := []string{testSecret}
	for tok := range seen {
		secrets = append(secrets, tok)
	}
	mu.Unlock()
	if len(secrets) < 4 {
		t.Fatalf("only %d tokens seen upstream; the test did not exercise rotation", len(secrets)-1)
	}
	places := map[string]string{
		"logs": logs, "/config/": string(config.Body), "/metrics": string(metrics.Body),
		"/wechat/status": string(status.Body), "error bodies": strings.Join(bodies, "\n"),
	}
	for where, text := range places {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s contains a secret or token (%.6s...)", where, s)
			}
		}
	}
}
