package sdktest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWechatAPI runs node/sdk.test.js: wechat-api from npm, unmodified,
// over HTTPS with Caddy's internal root trusted through
// NODE_EXTRA_CA_CERTS, and file.api.weixin.qq.com as its own gateway site.
// It needs node and `npm ci` in ./node (.ci/run does both); elsewhere it
// skips, except in CI, where a missing SDK is a failure.
func TestWechatAPI(t *testing.T) {
	node, err := exec.LookPath("node")
	_, modErr := os.Stat(filepath.Join("node", "node_modules", "wechat-api", "package.json"))
	if err != nil || modErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("node (%v) or wechat-api (%v) missing: run npm ci in sdktest/node", err, modErr)
		}
		t.Skip("needs node and `npm ci` in sdktest/node")
	}
	f := startFake(t)
	g := startGateway(t, f)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "sdk.test.js")
	cmd.Dir = "node"
	httpPort := g.HTTP[strings.LastIndexByte(g.HTTP, ':')+1:]
	cmd.Env = append(os.Environ(),
		"GATEWAY="+g.HTTPS,
		"FILE_HOST=file.api.weixin.qq.com:"+httpPort,
		"CONTROL="+f.Control,
		"NODE_EXTRA_CA_CERTS="+g.RootCA, // the whole trust recipe for Node
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	t.Logf("%s", out)

	paths := f.checkRequests(t)
	for _, p := range []string{"/cgi-bin/user/info", "/cgi-bin/menu/get", "/cgi-bin/menu/create",
		"/cgi-bin/message/template/send", "/cgi-bin/media/upload", "/cgi-bin/media/get",
		"/cgi-bin/ticket/getticket", "/cgi-bin/getcallbackip", "/cgi-bin/user/get",
		"/cgi-bin/tags/create", "/cgi-bin/qrcode/create", "/cgi-bin/message/custom/send",
		"/cgi-bin/media/uploadvideo"} {
		if paths[p] < 2 && p != "/cgi-bin/ticket/getticket" {
			t.Errorf("%s reached WeChat %d times, want once per round", p, paths[p])
		}
	}
	if paths["/cgi-bin/ticket/getticket"] < 1 {
		t.Error("getticket never reached WeChat")
	}
	g.checkReplay(t, f)
}

// TestLockfileHasNoAddresses: package-lock.json pins versions and hashes
// only, so installs use whatever registry the machine is configured for.
func TestLockfileHasNoAddresses(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("node", "package-lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); strings.Contains(s, `"resolved"`) || strings.Contains(s, ".tgz") {
		t.Error("package-lock.json records download addresses; keep omit-lockfile-registry-resolved=true in node/.npmrc and run npm install again")
	}
	if !strings.Contains(string(b), `"node_modules/wechat-api": {
      "version": "1.35.1"`) {
		t.Error("package-lock.json does not pin wechat-api 1.35.1")
	}
}
