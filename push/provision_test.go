package push_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// TestProvisionRefuses: configs that cannot work are refused at load,
// with an error that quotes no secret.
func TestProvisionRefuses(t *testing.T) {
	t.Setenv("PT_KEY", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
	t.Setenv("PT_SHORT_KEY", "secretkeytooshort")
	for _, tc := range []struct{ name, handler, want string }{
		{"bad kind", `"kind":"service_account","appid":"wx1","token":"tok123"`, "kind"},
		{"two ids", `"appid":"wx1","corpid":"ww1","token":"tok123"`, "exactly one"},
		{"no id", `"token":"tok123"`, "exactly one"},
		{"wecom by appid", `"kind":"wecom","appid":"wx1","token":"tok123","encoding_aes_key":"{env.PT_KEY}"`, "corpid"},
		{"corpid without wecom", `"corpid":"ww1","token":"tok123"`, "kind wecom"},
		{"short token", `"appid":"wx1","token":"ab"`, "token"},
		{"bad key", `"appid":"wx1","token":"tok123","encoding_aes_key":"{env.PT_SHORT_KEY}"`, "EncodingAESKey"},
		{"plain with a key", `"appid":"wx1","token":"tok123","mode":"plain","encoding_aes_key":"{env.PT_KEY}"`, "plain mode"},
		{"safe without a key", `"appid":"wx1","token":"tok123","mode":"safe"`, "EncodingAESKey"},
		{"wecom plain", `"kind":"wecom","corpid":"ww1","token":"tok123","mode":"plain"`, "safe"},
		{"json for an official account", `"appid":"wx1","token":"tok123","format":"json","encoding_aes_key":"{env.PT_KEY}"`, "mini program"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := `{"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[{"handler":"wechat_push",` + tc.handler + `}]}]}}}}}`
			var c caddy.Config
			if err := json.Unmarshal([]byte(cfg), &c); err != nil {
				t.Fatal(err)
			}
			err := caddy.Validate(&c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secretkeytooshort") || strings.Contains(err.Error(), "abcdefghijklmnop") {
				t.Fatalf("the error quotes a secret: %v", err)
			}
		})
	}
}

// TestCaddyfileRefuses: Caddyfile mistakes are named at adapt time.
func TestCaddyfileRefuses(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"wechat_push {\n\t\ttokne x\n\t}", `unknown subdirective "tokne"`},
		{"wechat_push {\n\t\ttoken a b\n\t}", "one value"},
		{"wechat_push {\n\t\tmax_body lots\n\t}", "max_body"},
		{"wechat_push {\n\t\tapp_timeout soon\n\t}", "app_timeout"},
		{"wechat_push {\n\t\tstore nosuchstore\n\t}", "nosuchstore"},
		{"wechat_push extra", "argument"},
	} {
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(":8080 {\n\t"+tc.body+"\n}\n"), nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.body, err, tc.want)
		}
	}
}

// TestDirectiveOrder: without an order option, wechat_push runs before
// reverse_proxy and before respond, whatever order they are written in.
func TestDirectiveOrder(t *testing.T) {
	cf := ":8080 {\n\thandle /wx {\n\t\trespond /health 200\n\t\treverse_proxy 127.0.0.1:9000\n\t\twechat_push {\n\t\t\tappid wx1\n\t\t\ttoken {env.T}\n\t\t}\n\t}\n}\n"
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	p, r, rp := strings.Index(s, `"wechat_push"`), strings.Index(s, `"static_response"`), strings.Index(s, `"reverse_proxy"`)
	if p < 0 || r < 0 || rp < 0 || p > r || p > rp {
		t.Fatalf("order: wechat_push %d, respond %d, reverse_proxy %d in %s", p, r, rp, s)
	}
}

// TestLiteralSecretWarned: a token or key written in the config, not as
// a placeholder, is warned about at load (the admin API's /config/ shows
// it), by field name and never by value.
func TestLiteralSecretWarned(t *testing.T) {
	logFile := t.TempDir() + "/caddy.log"
	cfg := `{"logging":{"logs":{"default":{"level":"WARN","writer":{"output":"file","filename":"` + logFile + `"}}}},
		"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[{"handler":"wechat_push",
		"appid":"wx1","token":"literalToken77","encoding_aes_key":"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"}]}]}}}}}`
	var c caddy.Config
	if err := json.Unmarshal([]byte(cfg), &c); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&c); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(logFile)
	log := string(b)
	if !strings.Contains(log, `"field":"token"`) || !strings.Contains(log, `"field":"encoding_aes_key"`) {
		t.Fatalf("no warning for the literal secrets:\n%s", log)
	}
	if strings.Contains(log, "literalToken77") || strings.Contains(log, "abcdefghijklmnop") {
		t.Fatal("the warning quotes a secret")
	}
}
