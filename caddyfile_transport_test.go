package wechat

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/caddy-wechat/wechat/caddykit"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// transportJSON adapts a site body and returns its one handler's
// transport and upstreams.
func transportJSON(t *testing.T, body string) (transport map[string]any, upstreams any) {
	t.Helper()
	cfg, err := adapt(":8080 {\n" + body + "\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Transport map[string]any `json:"transport"`
							Upstreams any            `json:"upstreams"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	for _, s := range doc.Apps.HTTP.Servers {
		if len(s.Routes) != 1 || len(s.Routes[0].Handle) != 1 {
			t.Fatalf("want one route with one handler: %s", cfg)
		}
		h := s.Routes[0].Handle[0]
		return h.Transport, h.Upstreams
	}
	t.Fatalf("no server: %s", cfg)
	return nil, nil
}

// The directive and the transport block take the same options and give
// the same transport.
func TestTransportCaddyfileMatchesDirective(t *testing.T) {
	opts := `appid {env.WECHAT_APPID}
	secret {env.WECHAT_SECRET}
	upstream http://127.0.0.1:9081
	token_api classic
	memcache 10.0.0.5:11211
	fetch_timeout 5s
	fetch_ceiling 50
	min_token_age 30s
	max_replay_body 1MiB
	quota_warn 80%
	keep_caller_auth
	sdk_token_endpoints off
	dial_timeout 2s`
	for name, pair := range map[string][2]string{
		"defaults": {"wechat {\n" + opts + "\n}",
			"reverse_proxy http://127.0.0.1:9081 {\ntransport wechat {\n" + opts + "\n}\n}"},
		"https": {"wechat {\nappid wx1\nsecret {env.S}\n}",
			"reverse_proxy https://api.weixin.qq.com {\ntransport wechat {\nappid wx1\nsecret {env.S}\n}\n}"},
		"store": {"wechat {\nappid wx1\nsecret {env.S}\nstore memcache {\nservers 10.0.0.5:11211\nprefix gw:\n}\nkeepalive 30s\n}",
			"reverse_proxy https://api.weixin.qq.com {\ntransport wechat {\nappid wx1\nsecret {env.S}\nstore memcache {\nservers 10.0.0.5:11211\nprefix gw:\n}\nkeepalive 30s\n}\n}"},
		"wecom": {"wechat {\ncorpid ww1\ncorpsecret {env.S}\n}",
			"reverse_proxy https://qyapi.weixin.qq.com {\ntransport wechat {\ncorpid ww1\ncorpsecret {env.S}\n}\n}"},
	} {
		t.Run(name, func(t *testing.T) {
			dir, dirUp := transportJSON(t, pair[0])
			tr, trUp := transportJSON(t, pair[1])
			if !reflect.DeepEqual(dir, tr) {
				t.Errorf("transports differ:\nwechat:        %v\nreverse_proxy: %v", dir, tr)
			}
			if !reflect.DeepEqual(dirUp, trUp) {
				t.Errorf("upstreams differ: %v, %v", dirUp, trUp)
			}
			if name == "store" && (dir["store"] == nil || dir["keep_alive"] == nil) {
				t.Errorf("store or keepalive lost: %v", dir)
			}
			if dir["protocol"] != "wechat" {
				t.Errorf("not the wechat transport: %v", dir)
			}
		})
	}
}

// HTTP transport subdirectives in the transport block go to the embedded
// transport; in the directive, the ones it does not take itself are refused
// by name.
func TestTransportCaddyfilePassesHTTPOptions(t *testing.T) {
	tr, _ := transportJSON(t, `reverse_proxy https://api.weixin.qq.com {
	transport wechat {
		appid wx1
		secret {env.S}
		tls_server_name api.weixin.qq.com
		keepalive 30s
		max_conns_per_host 8
	}
}`)
	if tr["appid"] != "wx1" || tr["max_conns_per_host"] != float64(8) || tr["keep_alive"] == nil {
		t.Errorf("transport: %v", tr)
	}
	tls, _ := tr["tls"].(map[string]any)
	if tls["server_name"] != "api.weixin.qq.com" {
		t.Errorf("tls: %v", tr["tls"])
	}
}

// The directive hands the http transport's subdirectives to its transport,
// as the transport block does.
func TestDirectivePassesHTTPTransportOptions(t *testing.T) {
	opts := `appid wx1
	secret {env.S}
	tls_server_name api.weixin.qq.com
	resolvers 119.29.29.29 223.5.5.5
	keepalive 30s
	tls_trust_pool inline {
		trust_der MIIB
	}`
	dir, _ := transportJSON(t, "wechat {\n"+opts+"\nflush_interval -1\n}")
	tr, _ := transportJSON(t, "reverse_proxy https://api.weixin.qq.com {\nflush_interval -1\ntransport wechat {\n"+opts+"\n}\n}")
	if !reflect.DeepEqual(dir, tr) {
		t.Errorf("transports differ:\nwechat:        %v\nreverse_proxy: %v", dir, tr)
	}
	if dir["resolver"] == nil || dir["keep_alive"] == nil {
		t.Errorf("transport: %v", dir)
	}
	tls, _ := dir["tls"].(map[string]any)
	if tls["server_name"] != "api.weixin.qq.com" || tls["ca"] == nil {
		t.Errorf("tls: %v", dir["tls"])
	}
}

// Real reverse_proxy subdirectives still pass through the directive.
func TestDirectivePassesProxySubdirectives(t *testing.T) {
	cfg, err := adapt(`:8080 {
	wechat {
		appid wx1
		secret {env.S}
		lb_policy first
		header_up X-Gateway wechat
		flush_interval -1
		@err status 5xx
		handle_response @err {
			respond "busy" 503
		}
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"policy":"first"`, `"X-Gateway"`, `"flush_interval":-1`, `"handle_response"`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("want %s in %s", want, cfg)
		}
	}
}

func TestCaddyfileErrorMessages(t *testing.T) {
	for name, tc := range map[string]struct {
		site string
		want []string
		not  []string
	}{
		"missing scheme": {"wechat {\nappid wx1\nsecret {env.S}\nupstream 127.0.0.1:9081\n}",
			[]string{"upstream 127.0.0.1:9081 has no scheme; write upstream http://127.0.0.1:9081", "Caddyfile:5"},
			[]string{"first path segment", "wechat: "}},
		"missing scheme on a name": {"wechat {\nappid wx1\nsecret {env.S}\nupstream api.weixin.qq.com\n}",
			[]string{"write upstream https://api.weixin.qq.com"}, nil},
		"typo": {"wechat {\nappid wx1\nsecert {env.S}\n}",
			[]string{`unknown subdirective "secert"`, "did you mean secret?", "nor one of reverse_proxy's", "Caddyfile:4"},
			[]string{"secret is required"}},
		"unknown word": {"wechat {\nappid wx1\nsecret {env.S}\nfrobnicate 1\n}",
			[]string{`unknown subdirective "frobnicate"`, "reverse_proxy"}, []string{"did you mean"}},
		"typo in the transport": {"reverse_proxy https://api.weixin.qq.com {\ntransport wechat {\nappid wx1\nsecert {env.S}\n}\n}",
			[]string{`unknown subdirective "secert" (did you mean secret?): it is not a transport wechat subdirective`, "did you mean secret?"}, []string{"secret is required"}},
		"typo in wechat_jssdk": {"wechat_jssdk {\nappid wx1\nsecret {env.S}\nraw_tokn\n}",
			[]string{`unknown subdirective "raw_tokn" (did you mean raw_token?)`, "not a wechat_jssdk subdirective"}, nil},
		"no secret": {"wechat {\nappid wx1\n}",
			[]string{"secret is required"}, []string{"wechat: "}},
		"no appid in the transport": {"reverse_proxy https://api.weixin.qq.com {\ntransport wechat {\nsecret {env.S}\n}\n}",
			[]string{"appid is required"}, []string{"wechat: "}},
		"bad sdk_token_endpoints": {"wechat {\nappid wx1\nsecret {env.S}\nsdk_token_endpoints maybe\n}",
			[]string{"want on or off"}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := adapt(":8080 {\n" + tc.site + "\n}\n")
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("want %q in: %v", w, err)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(err.Error(), w) {
					t.Errorf("want no %q in: %v", w, err)
				}
			}
		})
	}
}

// Every name offered as a suggestion is one the parser takes.
func TestAccountOptionsKnown(t *testing.T) {
	for _, name := range accountOptions {
		d := caddyfile.NewTestDispenser(name)
		d.Next()
		if known, _ := newCaddyfileTransport().parseOption(d, name, nil); !known {
			t.Errorf("%s is in accountOptions but parseOption does not know it", name)
		}
	}
	if !isProxySubdirective("lb_policy") || isProxySubdirective("secert") {
		t.Error("reverse_proxy's parser is not telling its subdirectives apart (did Caddy change its message?)")
	}
	if !caddykit.IsHTTPTransportSubdirective("tls") || caddykit.IsHTTPTransportSubdirective("appid") {
		t.Error("the http transport's parser is not telling its subdirectives apart")
	}
}

func TestSuggest(t *testing.T) {
	for in, want := range map[string]string{
		"secert": "secret", "apid": "appid", "upstreams": "upstream", "memcahce": "memcache",
		"sdk_token_endpoint": "sdk_token_endpoints", "lb_polcy": "", "frobnicate": "", "tls": "",
	} {
		if got := suggest(in, accountOptions); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

// Caddy puts the module's id in front of a Provision or Unmarshal error,
// and the logger's name on each log line: a hand-written "wechat: " doubles
// it. This keeps branches merged later from bringing one back.
func TestNoHandWrittenPrefix(t *testing.T) {
	re := regexp.MustCompile(`(Errorf|errors\.New|Errf|Err|\.Warn|\.Info|\.Error|\.Debug)\("(wechat|wechat_jssdk|wechat_fake): `)
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (path == "sdktest" || path == "bench" || path == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if re.MatchString(line) {
				t.Errorf("%s:%d: hand-written prefix: %s", path, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
