package integration

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/caddy-wechat/wechat/fakewechat"
)

const (
	testCorpID = "wwCORP0000000001"
	testAgentA = "agentA-secret-0123456789abcdefghij"
	testAgentB = "agentB-secret-0123456789abcdefghij"
)

// newWorkFake is the fake WeCom with two agents of one corp; hook, if set,
// may answer a request itself.
func newWorkFake(t *testing.T, hook func(w http.ResponseWriter, r *http.Request) bool) (*fakewechat.Server, string) {
	t.Helper()
	fw := fakewechat.New(fakewechat.Options{CorpID: testCorpID, CorpSecrets: map[string]string{"a": testAgentA, "b": testAgentB}})
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hook != nil && hook(w, r) {
			return
		}
		fw.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return fw, s.URL
}

// twoAgents serves agent A under /a and agent B under /b.
func twoAgents(upstream, secretA string) string {
	agent := func(prefix, secret string) string {
		return `	handle_path /` + prefix + `/* {
		wechat {
			corpid ` + testCorpID + `
			corpsecret ` + secret + `
			upstream ` + upstream + `
		}
	}
`
	}
	return siteConfig(agent("a", secretA) + agent("b", "{env.TEST_AGENT_B}"))
}

// startWork starts Caddy with both agents' secrets in the environment.
func startWork(t *testing.T, cfg string) *runningCaddy {
	t.Helper()
	t.Setenv("TEST_AGENT_A", testAgentA)
	t.Setenv("TEST_AGENT_B", testAgentB)
	return startCaddy(t, cfg)
}

func TestWeComTwoAgentsTwoTokens(t *testing.T) {
	resetAccounts(t)
	fw, up := newWorkFake(t, nil)
	g := startWork(t, twoAgents(up, "{env.TEST_AGENT_A}"))
	if r := get(t, g.URL+"/a/cgi-bin/user/get?userid=u1"); r.errcode() != 0 || r.JSON["path"] != "/cgi-bin/user/get" {
		t.Fatalf("agent A: %s", r.Body)
	}
	tokA := fw.LastAPIQuery().Get("access_token")
	if r := get(t, g.URL+"/b/cgi-bin/user/get?userid=u1"); r.errcode() != 0 {
		t.Fatalf("agent B: %s", r.Body)
	}
	tokB := fw.LastAPIQuery().Get("access_token")
	if tokA == "" || tokA == tokB || fw.Fetches("work") != 2 {
		t.Errorf("two agents: distinct tokens %v, %d fetches; want distinct, 2", tokA != tokB, fw.Fetches("work"))
	}
	if n := len(statusAccounts(t, g)); n != 2 {
		t.Errorf("%d accounts, want 2 (one per corpsecret)", n)
	}
	// 40014 (revoked) and 42001 (expired) are replayed with a new token.
	fw.RevokeAll()
	if r := get(t, g.URL+"/a/cgi-bin/user/get?userid=u1"); r.errcode() != 0 {
		t.Fatalf("after 40014: %s", r.Body)
	}
	fw.ExpireAll()
	if r := get(t, g.URL+"/b/cgi-bin/user/get?userid=u1"); r.errcode() != 0 {
		t.Fatalf("after 42001: %s", r.Body)
	}
	// Each call is rejected once, and each rejection is confirmed by one
	// failed probe (counted apart by the fake) before the token is dropped.
	if fw.Rejected(40014) != 1 || fw.Rejected(42001) != 1 || fw.Fetches("probe_rejected") != 2 || fw.Fetches("work") != 4 {
		t.Errorf("40014 %d, 42001 %d, probes rejected %d, fetches %d; want 1, 1, 2, 4",
			fw.Rejected(40014), fw.Rejected(42001), fw.Fetches("probe_rejected"), fw.Fetches("work"))
	}
	// Two agents of one corp share an appid: /metrics must still answer,
	// with the accounts told apart by their label (issue 11).
	m := get(t, "http://"+g.Admin+"/metrics")
	if m.Status != 200 {
		t.Fatalf("/metrics with two agents of one corp: HTTP %d", m.Status)
	}
	labels := regexp.MustCompile(`caddy_wechat_token_expiry_seconds\{[^}]*account="([0-9a-f]+)"`).FindAllStringSubmatch(string(m.Body), -1)
	if len(labels) != 2 || labels[0][1] == labels[1][1] {
		t.Errorf("want two expiry series with distinct account labels, got %v", labels)
	}
	st := get(t, "http://"+g.Admin+"/wechat/status")
	if c := strings.Count(string(st.Body), `"account":"`); c != 2 {
		t.Errorf("status view: %d account labels, want 2: %s", c, st.Body)
	}
	if strings.Contains(readFile(t, g.LogFile), testAgentA) {
		t.Error("corpsecret in the log")
	}
}

func TestWeComBadCorpSecret(t *testing.T) {
	resetAccounts(t)
	fw, up := newWorkFake(t, nil)
	g := startWork(t, twoAgents(up, "wrong-secret-0123456789"))
	for i := range 5 {
		r := get(t, g.URL+"/a/cgi-bin/user/get")
		want := http.StatusServiceUnavailable // backing off
		if i == 0 {
			want = http.StatusBadGateway // WeChat's errcode
		}
		if r.Status != want || r.Header.Get("X-Wechat-Gateway") != "error" {
			t.Fatalf("request %d: status %d, X-Wechat-Gateway %q; want %d, error", i, r.Status, r.Header.Get("X-Wechat-Gateway"), want)
		}
		if r.errcode() != 40001 || !strings.Contains(string(r.Body), "bad corpsecret") || strings.Contains(string(r.Body), "wrong-secret") {
			t.Fatalf("want 40001 saying bad corpsecret, without the secret: %s", r.Body)
		}
	}
	if n := fw.Fetches("work"); n != 1 {
		t.Errorf("5 requests with a bad corpsecret made %d fetches, want 1 (backoff, no retry loop)", n)
	}
	if r := get(t, g.URL+"/b/cgi-bin/user/get"); r.errcode() != 0 {
		t.Errorf("agent B suffers from A's bad secret: %s", r.Body)
	}
}

func TestWeComUntrustedIP(t *testing.T) {
	resetAccounts(t)
	_, up := newWorkFake(t, func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/cgi-bin/gettoken" {
			return false
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, `{"errcode":60020,"errmsg":"not allow to access from your ip, from ip: 198.51.100.9"}`)
		return true
	})
	g := startWork(t, twoAgents(up, "{env.TEST_AGENT_A}"))
	r := get(t, g.URL+"/a/cgi-bin/user/get")
	if r.errcode() != 60020 || !strings.Contains(string(r.Body), "not a trusted IP") || !strings.Contains(string(r.Body), "198.51.100.9") {
		t.Errorf("want a clear 60020 naming the IP: %s", r.Body)
	}
}

func TestWeComDefaultUpstream(t *testing.T) {
	cfg, err := adaptCaddyfile(":8080 {\n\twechat {\n\t\tcorpid ww1\n\t\tcorpsecret {env.S}\n\t}\n}")
	if err != nil {
		t.Fatal(err)
	}
	s := string(cfg)
	if !strings.Contains(s, `"dial":"qyapi.weixin.qq.com:443"`) || !strings.Contains(s, `"token_api":"work"`) {
		t.Errorf("WeCom defaults missing: %s", s)
	}
}
