package wechat

import (
	"context"
	"net/url"
	"testing"
)

// siteConfig is one site whose body is given, with the harness's globals.
func siteConfig(body string) string {
	return `{
	admin 127.0.0.1:%[2]d
	log {
		output file %[3]s
		level DEBUG
	}
}
http://127.0.0.1:%[1]d {
` + body + `
}
`
}

// WeChat's documented example (JS-SDK docs, appendix 1).
func TestJSSDKSignatureVector(t *testing.T) {
	got := jsapiSignature("sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
		"Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com?params=value")
	if got != "0f9de62fce790f9a083d5c99e95740ceb90c27ed" {
		t.Errorf("signature %s", got)
	}
	// Card signature: values sorted and joined, computed with sha1sum:
	// printf '%s' 1414587457TKTWm3WZYTPz0wzccnWpFS7Fjg8kV1IdDz01r4SQwMkuCKc | sha1sum
	if got := cardSignature("TKT", "1414587457", "Wm3WZYTPz0wzccnW", "pFS7Fjg8kV1IdDz01r4SQwMkuCKc", "", ""); got != cardVector {
		t.Errorf("card signature %s", got)
	}
}

func TestJSSDKCaddyfileErrors(t *testing.T) {
	for _, bad := range []string{
		"wechat_jssdk {\n\t\tappid x\n\t}",
		"wechat_jssdk {\n\t\tappid x\n\t\tsecret y\n\t\tnope 1\n\t}",
		"wechat_jssdk {\n\t\tappid x\n\t\tsecret y\n\t\traw_token yes\n\t}",
		"wechat_jssdk {\n\t\tappid x\n\t\tsecret y\n\t\tupstream ftp://x\n\t}",
	} {
		if _, err := adapt(":8080 {\n\t" + bad + "\n}"); err == nil {
			t.Errorf("adapted without error: %s", bad)
		}
	}
}

const cardVector = "0bd2b27509cd06ccb3fa62841c82ceba0943b0d8"

// jssdkSite has the gateway at / and the signer at /jssdk, both for the
// same account, so they must share one token.
func jssdkSite(upstream, extra string) string {
	return siteConfig(`	handle /jssdk {
		wechat_jssdk {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream ` + upstream + `
			` + extra + `
		}
	}
	handle {
		wechat {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream ` + upstream + `
		}
	}`)
}

// TestJSSDKTicketRefreshAhead stays here: it drives the ticket cache's
// renewal itself, which over HTTP would take the ticket's real lifetime.
func TestJSSDKTicketRefreshAhead(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	g := startCaddy(t, jssdkSite(f.URL, ""))
	sign := func() result { return get(t, g.URL+"/jssdk?url="+url.QueryEscape("http://example.com/")) }
	sign()
	c := onlyAccount(t).ticket("jsapi")
	if c.Status().RenewAt.IsZero() {
		t.Fatal("no renewal scheduled for the ticket")
	}
	old := c.Current()
	// What the scheduler does in the renewal window.
	fresh, err := c.Refresh(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if r := sign(); r.Status != 200 {
		t.Fatalf("sign after renewal: %s", r.Body)
	}
	if n := f.Fetches("ticket"); n != 2 {
		t.Fatalf("ticket fetches = %d, want 2 (one renewal ahead)", n)
	}
	if fresh == old || c.Current() != fresh {
		t.Error("renewed ticket not published")
	}
}
