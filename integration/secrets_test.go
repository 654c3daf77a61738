package integration

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/url"
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

// TestEchoedCredentialsScrubbed has WeChat echo the token and the secret in
// every place an answer can carry them (Location, Set-Cookie, a custom
// header, a small body, a large one, a gzip one, a login answer), with
// Caddy at DEBUG, whose "upstream roundtrip" line logs response headers.
// Neither the client nor any log line may see them.
func TestEchoedCredentialsScrubbed(t *testing.T) {
	f, g := setup(t, "")
	var mu sync.Mutex
	seen := map[string]bool{testSecret: true}
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		cred := r.URL.Query().Get("access_token")
		if cred == "" {
			cred = r.URL.Query().Get("secret")
		}
		if cred == "" || !strings.Contains(r.URL.Path, "/echo") && !strings.HasPrefix(r.URL.Path, "/sns/") {
			return false
		}
		mu.Lock()
		seen[cred] = true
		mu.Unlock()
		w.Header().Set("Location", "https://example.com/cb?access_token="+url.QueryEscape(cred))
		w.Header().Set("Set-Cookie", "t="+cred)
		w.Header().Set("X-Echo", cred)
		body := `{"errcode":0,"errmsg":"ok","echo":"` + cred + `"}`
		if strings.HasSuffix(r.URL.Path, "/large") {
			body = `{"errcode":0,"pad":"` + strings.Repeat("p", 9000) + `","echo":"` + cred + `"}`
		}
		w.Header().Set("Content-Type", "text/plain")
		if strings.HasSuffix(r.URL.Path, "/gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			io.WriteString(zw, body)
			zw.Close()
			return true
		}
		io.WriteString(w, body)
		return true
	})
	var answers []string
	for _, p := range []string{"/cgi-bin/echo/small", "/cgi-bin/echo/large", "/cgi-bin/echo/gzip", "/sns/jscode2session?js_code=c&grant_type=authorization_code"} {
		r := do(t, http.MethodGet, g.URL+p, nil, "Accept-Encoding", "gzip")
		b := r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			b, _ = io.ReadAll(zr)
		}
		if r.Status != 200 || !strings.Contains(string(b), redactedMark) {
			t.Errorf("%s: %d %.200s", p, r.Status, b)
		}
		answers = append(answers, fmt.Sprint(r.Header), string(b))
	}
	logs := readFile(t, g.LogFile)
	if !strings.Contains(logs, "upstream roundtrip") || !strings.Contains(logs, redactedMark) {
		t.Fatalf("no DEBUG upstream roundtrip line with scrubbed headers; the grep below would prove nothing:\n%.2000s", logs)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 2 {
		t.Fatalf("no token reached the echo")
	}
	for s := range seen {
		for where, text := range map[string]string{"logs": logs, "answers": strings.Join(answers, "\n")} {
			if strings.Contains(text, s) || strings.Contains(text, url.QueryEscape(s)) {
				t.Errorf("%s contain a token or the secret (%.6s...)", where, s)
			}
		}
	}
}
