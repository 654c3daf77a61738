package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// rid/get gives back the original request; every credential in it goes,
// whatever its value (here ones the gateway never held), and the rest of
// the answer stays useful.
func TestRedactRidAnswer(t *testing.T) {
	const other = "SomeoneElsesTokenNotOursAtAll"
	in := map[string]any{
		"errcode": 0, "errmsg": "ok",
		"request": map[string]any{
			"invoke_time":   1700000000,
			"cost_in_ms":    12,
			"request_url":   "openid=o1&access_token=" + other + "&Component_Access_Token=" + other + "&SECRET=" + other + "&lang=zh_CN",
			"request_body":  `{"grant_type":"client_credential","appid":"wx1","secret":"` + other + `","nested":{"component_appsecret":"` + other + `","authorizer_refresh_token":"` + other + `"},"force_refresh":false}`,
			"response_body": `{"errcode":40003,"errmsg":"invalid openid"}`,
		},
	}
	tokenFetch := `{"request":{"request_url":"","request_body":"{}","response_body":"{\"access_token\":\"` + other + `\",\"expires_in\":7200}"}}`
	if out := redactRidAnswer([]byte(tokenFetch)); bytes.Contains(out, []byte(other)) || !bytes.Contains(out, []byte("expires_in")) {
		t.Errorf("token fetch's response_body: %s", out)
	}
	b, _ := json.Marshal(in)
	out := redactRidAnswer(b)
	if bytes.Contains(out, []byte(other)) {
		t.Fatalf("credential left in %s", out)
	}
	var got struct {
		Request map[string]any `json:"request"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	r := got.Request
	if r["invoke_time"].(float64) != 1700000000 || r["cost_in_ms"].(float64) != 12 || r["response_body"] != in["request"].(map[string]any)["response_body"] {
		t.Errorf("rid/get lost its purpose: %s", out)
	}
	if u := r["request_url"].(string); !strings.HasPrefix(u, "openid=o1&access_token="+RedactedMark) || !strings.HasSuffix(u, "&lang=zh_CN") {
		t.Errorf("request_url = %q", u)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(r["request_body"].(string)), &body); err != nil || body["appid"] != "wx1" || body["grant_type"] != "client_credential" || body["secret"] != RedactedMark {
		t.Errorf("request_body = %v (%v)", r["request_body"], err)
	}
	// Not JSON at all: left for the needle scrub, never an error.
	if got := redactRidAnswer([]byte("<html>")); string(got) != "<html>" {
		t.Errorf("non-JSON changed: %q", got)
	}
}

// A full URL keeps its path and its harmless parameters, even when the
// path itself names a token endpoint: only the values are redacted.
func TestRedactURLStringKeepsPath(t *testing.T) {
	for in, want := range map[string]string{
		"https://api.weixin.qq.com/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=S": "https://api.weixin.qq.com/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=" + RedactedMark,
		"/cgi-bin/user/info?openid=o1&access_token=T":                                             "/cgi-bin/user/info?openid=o1&access_token=" + RedactedMark,
		"openid=o1&ACCESS_TOKEN=T":                                                                "openid=o1&ACCESS_TOKEN=" + RedactedMark,
	} {
		if got := redactURLString(in); got != want {
			t.Errorf("redactURLString(%q) = %q, want %q", in, got, want)
		}
	}
}
