package wechat

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// Native fuzz targets (issue 7). The seeds run with every `go test`; run
// one target for longer with, for example:
//
//	go test -run '^$' -fuzz '^FuzzErrcode$' -fuzztime 30s .

// --- errcode sniffer ---

// --- query rewrite ---

// --- Caddyfile ---

func FuzzCaddyfile(f *testing.F) {
	for _, s := range []string{
		"appid wx1\nsecret {env.S}",
		"appid wx1\nsecret s\nupstream https://api.weixin.qq.com https://api2.weixin.qq.com",
		"appid wx1\nsecret s\nupstream http://127.0.0.1:1\ntoken_api classic\nfetch_timeout 2s\nmax_replay_body 1MB",
		"appid wx1\nsecret s\nmemcache 127.0.0.1:11211 [::1]:11211\nmemcache_prefix p:\nmemcache_timeout 50ms",
		"appid wx1\nsecret s\ndial_timeout 3\nresponse_header_timeout 1s\nlb_try_duration 5s\nheader_up X-A b",
		"appid wx1\nsecret s\nupstream ftp://x",
		"appid wx1\nsecret s\nupstream http://a https://b",
		"appid wx1\nsecret s\nupstream http://u@h/p?q#f",
		"appid\nsecret",
		"appid wx1 wx2\nsecret s",
		"appid wx1\nsecret s\nto http://evil",
		"appid wx1\nsecret s\ntransport http {\n}",
		"appid wx1\nsecret s\nmax_replay_body -1",
		"appid wx1\nsecret s\nmemcache nohostport",
		"appid wx1\nsecret s\nhandle_response {\n\trespond 200\n}",
		"appid wx1\nsecret s\n}\n{",
		"wechat\n",
		"http://x {\n\twechat /api/* {\n\t\tappid a\n\t\tsecret b\n\t}\n}",
		":80 {\n\twechat extra {\n\t}\n}",
		"{\n\torder wechat first\n}\n:80 {\n\twechat {\n\t\tappid a\n\t\tsecret b\n\t\tupstream http://[::1]:9\n\t}\n}",
	} {
		f.Add(s)
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	f.Fuzz(func(t *testing.T, src string) {
		if strings.Contains(src, "import") || strings.Contains(src, "{$") || strings.Contains(src, "<<") {
			return // hermetic: no files, no environment, no heredoc noise
		}
		text := src
		if !strings.Contains(src, "wechat") {
			text = ":8080 {\n\twechat {\n" + src + "\n\t}\n}\n"
		}
		cfg, _, err := adapter.Adapt([]byte(text), map[string]any{"filename": "Caddyfile"})
		if err != nil {
			return
		}
		var doc any
		if err := json.Unmarshal(cfg, &doc); err != nil {
			t.Fatalf("adapted to invalid JSON: %v", err)
		}
		// Every wechat transport the adapter emits has credentials and
		// upstreams that Provision will accept.
		var walk func(v any)
		walk = func(v any) {
			switch v := v.(type) {
			case map[string]any:
				if v["protocol"] == "wechat" {
					b, _ := json.Marshal(v)
					var tr Transport
					if err := json.Unmarshal(b, &tr); err != nil {
						t.Fatalf("wechat transport does not decode: %v\n%s", err, b)
					}
					if tr.AppID == "" || tr.Secret == "" {
						t.Fatalf("wechat transport without appid/secret: %s", b)
					}
					if _, err := gateway.ParseUpstreams(tr.Upstreams); err != nil {
						t.Fatalf("adapter accepted upstreams that Provision rejects: %v\n%s", err, text)
					}
				}
				for _, c := range v {
					walk(c)
				}
			case []any:
				for _, c := range v {
					walk(c)
				}
			}
		}
		walk(doc)
	})
}
