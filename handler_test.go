package wechat

import (
	"testing"
)

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
