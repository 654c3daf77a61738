package wechat

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
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

// A placeholder that resolves to nothing fails at load, naming the field.
func TestProvisionFailsOnEmptySecret(t *testing.T) {
	resetAccounts(t)
	t.Setenv("TEST_WECHAT_APPID", testAppID)
	t.Setenv("TEST_WECHAT_SECRET", "")
	cfg, err := adapt(strings.NewReplacer("%[1]d", "0", "%[2]d", "0", "%[3]s", t.TempDir()+"/log").Replace(basicConfig("http://127.0.0.1:1", "")))
	if err != nil {
		t.Fatal(err)
	}
	err = caddy.Load(cfg, true)
	if err == nil || !strings.Contains(err.Error(), "secret is required") {
		t.Fatalf("want a clear load error, got %v", err)
	}
}

// Two accounts under two path prefixes of one site, with no order option.
func TestTwoAccountsUnderHandlePath(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	a, b := newFake(t), newFake(t)
	g := startCaddy(t, `{
	admin 127.0.0.1:%[2]d
}
http://127.0.0.1:%[1]d {
	handle_path /a/* {
		wechat {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream `+a.URL+`
		}
	}
	route /b/* {
		uri strip_prefix /b
		wechat {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream `+b.URL+`
			token_api classic
		}
	}
}
`)
	if r := get(t, g.URL+"/a/cgi-bin/user/info?openid=1"); r.errcode() != 0 || r.JSON["path"] != "/cgi-bin/user/info" {
		t.Errorf("/a: %s", r.Body)
	}
	if r := get(t, g.URL+"/b/cgi-bin/user/info?openid=2"); r.errcode() != 0 || r.JSON["path"] != "/cgi-bin/user/info" {
		t.Errorf("/b: %s", r.Body)
	}
	if a.Fetches("stable") != 1 || a.Fetches("classic") != 0 || b.Fetches("classic") != 1 || b.Fetches("stable") != 0 {
		t.Errorf("fetches: a stable=%d classic=%d, b stable=%d classic=%d",
			a.Fetches("stable"), a.Fetches("classic"), b.Fetches("stable"), b.Fetches("classic"))
	}
}

// The shipped examples must load: the demo runs end to end against the
// fake WeChat, and Caddyfile.example adapts.
func TestExamples(t *testing.T) {
	resetAccounts(t)
	t.Setenv("DEMO_SECRET", "demo-secret")
	demo, err := os.ReadFile("examples/demo.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	gw, fake, admin := freePort(t), freePort(t), freePort(t)
	cfg := strings.NewReplacer(":8080 {", "http://127.0.0.1:"+strconv.Itoa(gw)+" {", "127.0.0.1:9081", "127.0.0.1:"+strconv.Itoa(fake),
		":9081", ":"+strconv.Itoa(fake), "localhost:2019", "127.0.0.1:"+strconv.Itoa(admin)).Replace(string(demo))
	loadCaddyfile(t, cfg)
	t.Cleanup(resetAccountsFunc(t))
	r := get(t, "http://127.0.0.1:"+strconv.Itoa(gw)+"/cgi-bin/user/info?openid=o1")
	if r.errcode() != 0 || r.JSON["query"] != "openid=o1" {
		t.Errorf("demo: %d %s", r.Status, r.Body)
	}

	t.Setenv("WECHAT_APPID", "wx1")
	t.Setenv("WECHAT_SECRET", "s")
	example, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adapt(string(example)); err != nil {
		t.Errorf("Caddyfile.example: %v", err)
	}
}

func resetAccountsFunc(t *testing.T) func() { return func() { resetAccounts(t) } }

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
