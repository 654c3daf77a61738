package wechat

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestAdaptProducesCleanJSON(t *testing.T) {
	cfg, err := adapt(`:8080 {
	wechat {
		appid  {env.WECHAT_APPID}
		secret {file./run/secrets/wechat}
		upstream https://api.weixin.qq.com https://api2.weixin.qq.com
		token_api classic
		memcache 10.0.0.5:11211 10.0.0.6:11211
		memcache_prefix gw:
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []json.RawMessage `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	var h struct {
		Handler   string `json:"handler"`
		Upstreams []struct {
			Dial string `json:"dial"`
		} `json:"upstreams"`
		Transport struct {
			Protocol string   `json:"protocol"`
			AppID    string   `json:"appid"`
			Secret   string   `json:"secret"`
			TokenAPI string   `json:"token_api"`
			Memcache []string `json:"memcache"`
			TLS      any      `json:"tls"`
		} `json:"transport"`
		LoadBalancing struct {
			Retries int `json:"retries"`
		} `json:"load_balancing"`
	}
	for _, s := range doc.Apps.HTTP.Servers {
		if len(s.Routes) != 1 || len(s.Routes[0].Handle) != 1 {
			t.Fatalf("want one route with one handler, got %s", cfg)
		}
		if err := json.Unmarshal(s.Routes[0].Handle[0], &h); err != nil {
			t.Fatal(err)
		}
	}
	if h.Handler != "reverse_proxy" || h.Transport.Protocol != "wechat" {
		t.Fatalf("not a reverse_proxy with the wechat transport: %s", cfg)
	}
	if len(h.Upstreams) != 2 || h.Upstreams[0].Dial != "api.weixin.qq.com:443" || h.Upstreams[1].Dial != "api2.weixin.qq.com:443" {
		t.Errorf("upstreams: %+v", h.Upstreams)
	}
	if h.Transport.Secret != "{file./run/secrets/wechat}" || h.Transport.AppID != "{env.WECHAT_APPID}" {
		t.Errorf("placeholders must stay unresolved in the JSON: %+v", h.Transport)
	}
	if h.Transport.TLS == nil || h.Transport.TokenAPI != "classic" || len(h.Transport.Memcache) != 2 {
		t.Errorf("transport: %+v", h.Transport)
	}
	if h.LoadBalancing.Retries != 1 {
		t.Errorf("two upstreams should fail over once, retries=%d", h.LoadBalancing.Retries)
	}
}

func TestCaddyfileErrors(t *testing.T) {
	for name, tc := range map[string]struct{ body, want string }{
		"no appid":        {"secret {env.S}", "appid is required"},
		"no secret":       {"appid wx1", "secret is required"},
		"bad upstream":    {"appid wx1\nsecret s\nupstream ftp://x", "scheme must be http or https"},
		"upstream path":   {"appid wx1\nsecret s\nupstream https://api.weixin.qq.com/cgi-bin", "only scheme://host"},
		"mixed schemes":   {"appid wx1\nsecret s\nupstream https://a.example http://b.example", "mix http and https"},
		"bad token_api":   {"appid wx1\nsecret s\ntoken_api fast", "stable or classic"},
		"unknown option":  {"appid wx1\nsecret s\nfrobnicate 1", "frobnicate"},
		"to not allowed":  {"appid wx1\nsecret s\nto http://x", "not allowed"},
		"bad memcache":    {"appid wx1\nsecret s\nmemcache nohostport", "host:port"},
		"two appid args":  {"appid wx1 wx2\nsecret s", "wrong argument count"},
		"bad replay size": {"appid wx1\nsecret s\nmax_replay_body lots", "max_replay_body"},
		"bad quota_warn":  {"appid wx1\nsecret s\nquota_warn 3", "quota_warn"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := adapt(":8080 {\n\twechat {\n" + tc.body + "\n\t}\n}\n")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want an error containing %q, got %v", tc.want, err)
			}
		})
	}
}

// response_header_timeout defaults to 30 s in both Caddyfile forms, and 0
// turns it off (reverse_proxy's own default), as the README says.
func TestResponseHeaderTimeoutDefaultAndOff(t *testing.T) {
	for _, tc := range []struct {
		name, opt string
		want      int64
	}{
		{"default", "", int64(30e9)},
		{"off", "response_header_timeout 0", 0},
		{"set", "response_header_timeout 5s", int64(5e9)},
	} {
		for form, site := range map[string]string{
			"wechat":           "wechat {\n\t\tappid wx1\n\t\tsecret s\n\t\t" + tc.opt + "\n\t}",
			"transport wechat": "reverse_proxy https://api.weixin.qq.com {\n\t\ttransport wechat {\n\t\t\tappid wx1\n\t\t\tsecret s\n\t\t\t" + tc.opt + "\n\t\t}\n\t}",
		} {
			cfg, err := adapt(":8080 {\n\t" + site + "\n}")
			if err != nil {
				t.Fatalf("%s, %s: %v", form, tc.name, err)
			}
			var got struct {
				RHT int64 `json:"response_header_timeout"`
			}
			i := strings.Index(string(cfg), `"transport":`)
			if i < 0 {
				t.Fatalf("%s: no transport in %s", form, cfg)
			}
			if err := json.NewDecoder(strings.NewReader(string(cfg[i+len(`"transport":`):]))).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if got.RHT != tc.want {
				t.Errorf("%s, %s: response_header_timeout %d, want %d", form, tc.name, got.RHT, tc.want)
			}
		}
	}
}

func TestCaddyfileRequestPathOptions(t *testing.T) {
	cfg, err := adapt(`:8080 {
	wechat {
		appid wx1
		secret {env.S}
		max_buffered_bytes 32MiB
		body_read_timeout 5s
		keep_caller_auth
	}
}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"max_buffered_bytes":33554432`, `"body_read_timeout":5000000000`, `"keep_caller_auth":true`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("adapted config lacks %s: %s", want, cfg)
		}
	}
	for _, bad := range []string{"max_buffered_bytes lots", "body_read_timeout soon", "keep_caller_auth yes"} {
		if _, err := adapt(":8080 {\n\twechat {\n\t\tappid wx1\n\t\tsecret {env.S}\n\t\t" + bad + "\n\t}\n}"); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}
