package wechat

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// The shipped examples must load: the demo runs end to end against the
// fake WeChat, and Caddyfile.example adapts.
func TestExamples(t *testing.T) {
	resetAccounts(t)
	t.Setenv("DEMO_SECRET", "demo-secret")
	demo, err := os.ReadFile("examples/demo.Caddyfile")
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
	example, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adapt(string(example)); err != nil {
		t.Errorf("Caddyfile.example: %v", err)
	}
}

func resetAccountsFunc(t *testing.T) func() { return func() { resetAccounts(t) } }
