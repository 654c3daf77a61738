package integration

import (
	"strings"
	"testing"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/caddy-wechat/wechat/internal/credential"
)

// The store module and the old short form reach the same memcache data,
// sealed: the store holds no token in clear and its key names hold no
// hash of the secret that can be checked without it.
func TestMemcacheStoreThroughCaddy(t *testing.T) {
	mc := startMemcached(t)
	for _, form := range []string{
		"store memcache {\n\t\t\tservers " + mc.Addr + "\n\t\t\tprefix gw:\n\t\t\ttimeout 200ms\n\t\t}",
		"memcache " + mc.Addr + "\n\t\tmemcache_prefix gw:",
	} {
		t.Run(strings.Fields(form)[0], func(t *testing.T) {
			mc.FlushAll()
			f, g := setup(t, form)
			r := get(t, g.URL+"/cgi-bin/user/info")
			if r.errcode() != 0 {
				t.Fatalf("through the memcache store: %s", r.Body)
			}
			if !onlyAccountRow(t, g).Shared {
				t.Fatal("the account has no shared store")
			}
			seal, _ := credential.NewSealer(testSecret, testAppID)
			key := "gw:" + seal.KeyName() + ":access_token"
			raw := memcache.New(mc.Addr)
			it, err := raw.Get(key)
			if err != nil {
				t.Fatalf("no sealed token under %s: %v", key, err)
			}
			if strings.Contains(string(it.Value), f.CurrentStable()) {
				t.Fatal("memcache holds the token in clear")
			}
			// A restarted gateway in front of the same WeChat adopts
			// the stored token: no fetch.
			before := f.Fetches("stable")
			g = restart(t, f, form)
			if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 || f.Fetches("stable") != before {
				t.Fatalf("a new instance fetched again (%d → %d): %s", before, f.Fetches("stable"), r.Body)
			}
		})
	}
}

// A store that answers nothing costs one short timeout, then requests go
// on locally.
func TestMemcacheStoreBlackHoled(t *testing.T) {
	bh := startBlackHole(t)
	_, g := setup(t, "store memcache {\n\t\t\tservers "+bh.Addr()+"\n\t\t\ttimeout 100ms\n\t\t}")
	for range 20 {
		if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
			t.Fatalf("with a black-holed store: %s", r.Body)
		}
	}
	if !onlyAccountRow(t, g).StoreDown {
		t.Error("the breaker is not open after the store timed out")
	}
}

// The store block parses in both directives, and the options after it
// are still read.
func TestStoreCaddyfileBlock(t *testing.T) {
	for _, dir := range []string{"wechat", "wechat_jssdk"} {
		cfg, err := adaptCaddyfile(`http://127.0.0.1:1 {
	` + dir + ` {
		appid wx1
		secret {env.S}
		store memcache {
			servers 127.0.0.1:11211 127.0.0.1:11212
			prefix p:
			timeout 250ms
		}
		fetch_timeout 7s
		fetch_ceiling 50
	}
}`)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		js := string(cfg)
		for _, want := range []string{`"module":"memcache"`, `"servers":["127.0.0.1:11211","127.0.0.1:11212"]`, `"prefix":"p:"`, `"fetch_timeout":7000000000`, `"fetch_ceiling":50`} {
			if !strings.Contains(js, want) {
				t.Errorf("%s: adapted config lacks %s:\n%s", dir, want, js)
			}
		}
	}
}
