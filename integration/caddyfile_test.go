package integration

// Caddyfiles that must load and run in a real Caddy: the shipped examples,
// two accounts in one site, and a placeholder that resolves to nothing.

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// A placeholder that resolves to nothing fails at load, naming the field.
func TestProvisionFailsOnEmptySecret(t *testing.T) {
	resetAccounts(t)
	t.Setenv("TEST_WECHAT_APPID", testAppID)
	t.Setenv("TEST_WECHAT_SECRET", "")
	cfg, err := adaptCaddyfile(strings.NewReplacer("%[1]d", "0", "%[2]d", "0", "%[3]s", t.TempDir()+"/log").Replace(basicConfig("http://127.0.0.1:1", "")))
	if err != nil {
		t.Fatal(err)
	}
	err = caddy.Load(cfg, true)
	if err == nil || !strings.Contains(err.Error(), "secret is required") {
		t.Fatalf("want a clear load error, got %v", err)
	}
}

// Two accounts under two path prefixes of one site, with no order option.
func TestTwoAccountsUnderHandlePath(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	a, b := newFake(t), newFake(t)
	g := startCaddy(t, `{
	admin 127.0.0.1:%[2]d
}
http://127.0.0.1:%[1]d {
	handle_path /a/* {
		wechat {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream `+a.URL+`
		}
	}
	route /b/* {
		uri strip_prefix /b
		wechat {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream `+b.URL+`
			token_api classic
		}
	}
}
`)
	if r := get(t, g.URL+"/a/cgi-bin/user/info?openid=1"); r.errcode() != 0 || r.JSON["path"] != "/cgi-bin/user/info" {
		t.Errorf("/a: %s", r.Body)
	}
	if r := get(t, g.URL+"/b/cgi-bin/user/info?openid=2"); r.errcode() != 0 || r.JSON["path"] != "/cgi-bin/user/info" {
		t.Errorf("/b: %s", r.Body)
	}
	if a.Fetches("stable") != 1 || a.Fetches("classic") != 0 || b.Fetches("classic") != 1 || b.Fetches("stable") != 0 {
		t.Errorf("fetches: a stable=%d classic=%d, b stable=%d classic=%d",
			a.Fetches("stable"), a.Fetches("classic"), b.Fetches("stable"), b.Fetches("classic"))
	}
}

// The shipped examples must load: the demo runs end to end against the
// fake WeChat, and Caddyfile.example adapts.
func TestExamples(t *testing.T) {
	resetAccounts(t)
	t.Setenv("DEMO_SECRET", "demo-secret")
	demo, err := os.ReadFile("../examples/demo.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	gw, fake, admin := freePort(t), freePort(t), freePort(t)
	cfg := strings.NewReplacer(":8080 {", "http://127.0.0.1:"+strconv.Itoa(gw)+" {", "127.0.0.1:9081", "127.0.0.1:"+strconv.Itoa(fake),
		":9081", ":"+strconv.Itoa(fake), "localhost:2019", "127.0.0.1:"+strconv.Itoa(admin)).Replace(string(demo))
	loadCaddyfile(t, cfg)
	t.Cleanup(resetAccountsFunc(t))
	r := get(t, "http://127.0.0.1:"+strconv.Itoa(gw)+"/cgi-bin/user/info?openid=o1")
	if r.errcode() != 0 || r.JSON["query"] != "openid=o1" {
		t.Errorf("demo: %d %s", r.Status, r.Body)
	}

	t.Setenv("WECHAT_APPID", "wx1")
	t.Setenv("WECHAT_SECRET", "s")
	example, err := os.ReadFile("../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adaptCaddyfile(string(example)); err != nil {
		t.Errorf("Caddyfile.example: %v", err)
	}
}

func resetAccountsFunc(t *testing.T) func() { return func() { resetAccounts(t) } }

// Caddy names the module in front of a provision error; ours adds no
// second "wechat:".
func TestProvisionErrorHasOnePrefix(t *testing.T) {
	resetAccounts(t)
	err := caddy.Load([]byte(`{"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[
		{"handler":"reverse_proxy","transport":{"protocol":"wechat","appid":"wx1","secret":"{env.TEST_NO_SUCH_VAR}"}}]}]}}}}}`), true)
	if err == nil || !strings.Contains(err.Error(), "secret is required") {
		t.Fatalf("want a load error, got %v", err)
	}
	if !strings.Contains(err.Error(), "transport.wechat: secret is required") {
		t.Errorf("a hand-written prefix: %v", err)
	}
}
