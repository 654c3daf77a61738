package component

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// The open platform's directives parse into their own configuration
// (optionFields), not an account's: they take the options they document,
// refuse the account's own (token_api, corpid, fetch_ceiling...), and
// say what is missing in their own words.
func TestComponentCaddyfileOwnOptions(t *testing.T) {
	adapt := func(block string) (string, error) {
		b, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(":80 {\n"+block+"\n}"), nil)
		return string(b), err
	}
	out, err := adapt("wechat_component {\n appid wxc\n secret {env.S}\n upstream http://127.0.0.1:9\n fetch_timeout 7s\n dial_timeout 2s\n max_replay_body 2MiB\n keep_caller_auth\n}")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"appid":"wxc"`, `"fetch_timeout":7000000000`, `"dial_timeout":2000000000`, `"response_header_timeout":30000000000`,
		`"max_replay_body":2097152`, `"keep_caller_auth":true`, `"token_endpoints":["http://127.0.0.1:9"]`} {
		if !strings.Contains(out, want) {
			t.Errorf("wechat_component: %s missing in %s", want, out)
		}
	}
	for _, tc := range []struct{ block, want string }{
		{"wechat_component {\n appid a\n secret s\n token_api classic\n}", "token_api"},
		{"wechat_component {\n appid a\n corpid a\n secret s\n}", "corpid"},
		{"wechat_component {\n secret s\n}", "appid is required, at"},
		{"wechat_component {\n appid a\n}", "secret is required;"},
		{"wechat_component_callback {\n appid a\n secret s\n token t\n aes_key k\n dial_timeout 1s\n}", `unknown subdirective "dial_timeout"`},
		{"wechat_component_callback {\n appid a\n secret s\n token t\n aes_key k\n fetch_ceiling 5\n}", `unknown subdirective "fetch_ceiling"`},
		{"wechat_component_callback {\n appid a\n secret s\n token t\n aes_key k\n upstream http://x/path\n}", "give only scheme://host"},
		{"wechat_component_callback {\n appid a\n secret s\n token t\n aes_key k\n max_body lots\n}", `max_body "lots"`},
	} {
		if _, err := adapt(tc.block); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want one naming %q", tc.block, err, tc.want)
		}
	}
}

// Inside reverse_proxy, `transport wechat_component` takes the directive's
// options and the http transport's, and gives the transport the same JSON
// as the wechat_component directive; a typo is named, not passed on.
func TestComponentTransportInsideReverseProxy(t *testing.T) {
	transportOf := func(site string) map[string]any {
		t.Helper()
		b, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(":80 {\n"+site+"\n}"), nil)
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Apps struct {
				HTTP struct {
					Servers map[string]struct {
						Routes []struct {
							Handle []struct {
								Transport map[string]any `json:"transport"`
							} `json:"handle"`
						} `json:"routes"`
					} `json:"servers"`
				} `json:"http"`
			} `json:"apps"`
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatal(err)
		}
		tr := cfg.Apps.HTTP.Servers["srv0"].Routes[0].Handle[0].Transport
		if tr == nil {
			t.Fatalf("no transport in %s", b)
		}
		return tr
	}
	short := transportOf("wechat_component {\n appid wxc\n secret {env.S}\n fetch_timeout 7s\n keep_caller_auth\n dial_timeout 2s\n}")
	long := transportOf("reverse_proxy https://api.weixin.qq.com {\n transport wechat_component {\n  appid wxc\n  secret {env.S}\n  fetch_timeout 7s\n  keep_caller_auth\n  dial_timeout 2s\n }\n}")
	if !reflect.DeepEqual(short, long) {
		t.Errorf("inside reverse_proxy:\n%v\nthe directive:\n%v", long, short)
	}
	if long["protocol"] != "wechat_component" || long["appid"] != "wxc" || long["tls"] == nil {
		t.Errorf("transport %v", long)
	}
	// The http transport's own subdirectives reach its parser.
	withHTTP := transportOf("reverse_proxy https://api.weixin.qq.com {\n transport wechat_component {\n  appid wxc\n  secret s\n  tls_timeout 4s\n  keepalive 40s\n }\n}")
	if tls, _ := withHTTP["tls"].(map[string]any); tls == nil || tls["handshake_timeout"] != float64(4e9) || withHTTP["keep_alive"] == nil {
		t.Errorf("http subdirectives lost: %v", withHTTP)
	}
	for _, tc := range []struct{ block, want string }{
		{"transport wechat_component {\n appid wxc\n secret s\n secert x\n}", `unknown subdirective "secert"`},
		{"transport wechat_component {\n appid wxc\n secret s\n token_api classic\n}", `unknown subdirective "token_api"`},
		{"transport wechat_component {\n secret s\n}", "appid is required"},
		{"transport wechat_component extra {\n appid wxc\n secret s\n}", "wrong argument count"},
	} {
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(":80 {\nreverse_proxy https://api.weixin.qq.com {\n"+tc.block+"\n}\n}"), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v; want %q", tc.block, err, tc.want)
		}
	}
}
