package push_test

import (
	"encoding/json"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/caddy-wechat/wechat/push"
	_ "github.com/caddy-wechat/wechat/stores" // the store modules
)

// The Caddyfile form of testdata/wechat_push.json.
const goldenCaddyfile = `:8080 {
	route /wx/oa {
		wechat_push {
			appid wx1234567890abcdef
			token {env.OA_PUSH_TOKEN}
			encoding_aes_key {env.OA_PUSH_AES_KEY}
			original_id gh_0123456789ab
			max_skew 2m
			app_timeout 10s
			store memcache {
				servers 127.0.0.1:11211
			}
		}
		reverse_proxy 127.0.0.1:9000
	}
	route /wx/mp {
		wechat_push {
			kind mini_program
			format json
			appid wxfedcba0987654321
			token {env.MP_PUSH_TOKEN}
			encoding_aes_key {env.MP_PUSH_AES_KEY}
			max_body 32KiB
		}
		reverse_proxy 127.0.0.1:9001
	}
	route /wx/wecom {
		wechat_push {
			kind wecom
			suite_id ww0000000suite0001
			mode safe
			token {env.WECOM_PUSH_TOKEN}
			encoding_aes_key {env.WECOM_PUSH_AES_KEY}
		}
		reverse_proxy 127.0.0.1:9002
	}
}
`

// pushHandlers returns the wechat_push objects of a config, in order.
func pushHandlers(t *testing.T, cfg []byte) []map[string]any {
	t.Helper()
	var doc any
	if err := json.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "wechat_push" {
				out = append(out, v)
				return
			}
			for _, k := range []string{"apps", "http", "servers", "wechat", "srv0", "routes", "handle"} {
				if x, ok := v[k]; ok {
					walk(x)
				}
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	return out
}

// TestJSONGolden: the JSON form in testdata is what JSON users write. Its
// field names are promises: each handler decodes into push.Handler with
// no unknown field and encodes back to the same object; the Caddyfile
// form adapts to the same handlers; and Caddy provisions the config.
func TestJSONGolden(t *testing.T) {
	golden, err := os.ReadFile("testdata/wechat_push.json")
	if err != nil {
		t.Fatal(err)
	}
	want := pushHandlers(t, golden)
	if len(want) != 3 {
		t.Fatalf("%d handlers in the golden", len(want))
	}
	for i, h := range want {
		b, _ := json.Marshal(h)
		// A module's JSON is the handler name plus its own fields.
		type named struct {
			Name string `json:"handler"`
			*push.Handler
		}
		in := named{Handler: new(push.Handler)}
		d := json.NewDecoder(strings.NewReader(string(b)))
		d.DisallowUnknownFields()
		if err := d.Decode(&in); err != nil {
			t.Fatalf("handler %d: %v", i, err)
		}
		back, _ := json.Marshal(in)
		var got map[string]any
		_ = json.Unmarshal(back, &got)
		if !reflect.DeepEqual(got, h) {
			t.Errorf("handler %d round-trips to\n%s\nwant\n%s", i, back, b)
		}
	}

	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(goldenCaddyfile), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The Caddyfile orders routes by path; compare the handlers as a set.
	canon := func(hs []map[string]any) []string {
		var out []string
		for _, h := range hs {
			b, _ := json.Marshal(h) // sorted keys
			out = append(out, string(b))
		}
		sort.Strings(out)
		return out
	}
	if got := canon(pushHandlers(t, adapted)); !reflect.DeepEqual(got, canon(want)) {
		t.Errorf("the Caddyfile form adapts to\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(canon(want), "\n"))
	}

	for _, k := range []string{"OA", "MP", "WECOM"} {
		t.Setenv(k+"_PUSH_TOKEN", "token-for-"+strings.ToLower(k))
		t.Setenv(k+"_PUSH_AES_KEY", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG")
	}
	var cfg caddy.Config
	if err := json.Unmarshal(golden, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("Caddy refuses the golden: %v", err)
	}
}
