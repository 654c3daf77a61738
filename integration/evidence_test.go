package integration

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/fakewechat"
	"github.com/caddy-wechat/wechat/internal/credential"
)

// Issue 20 §1 through a real Caddy: a verdict or a vouch is evidence about
// the moment it was taken, not a licence. A real revocation (RevokeAll:
// another system's force_refresh, a secret reset) 0.5 s after any of
// three kinds of evidence is repaired on the first call after it, stable
// and classic, alone and over a shared store (memcache), with the
// minimum token age at its production default.
func TestRevocationAfterEvidenceThroughCaddy(t *testing.T) {
	mc := startMemcached(t)
	const api = "/cgi-bin/user/info?openid=o1"
	scenarios := []struct {
		name   string
		before func(t *testing.T, f *fakeWeChat, g *runningCaddy)
	}{
		// The probe says "valid" about the 40001-only API's path only.
		{"after a 40001-only call", func(t *testing.T, f *fakeWeChat, g *runningCaddy) {
			for range 3 {
				if r := get(t, g.URL+fakewechat.AlwaysInvalidPath); r.errcode() != 40001 {
					t.Fatalf("the 40001-only API: %s", r.Body)
				}
			}
		}},
		// Stable vouches for the token (the endpoint hands it back),
		// classic fetches a replacement that fails too: held while the
		// glitch lasts, until the first success.
		{"after a glitch and its recovery", func(t *testing.T, f *fakeWeChat, g *runningCaddy) {
			f.Glitch(time.Hour)
			for range 5 {
				if r := get(t, g.URL+api); r.errcode() != 40001 {
					t.Fatalf("during the glitch: %s", r.Body)
				}
			}
			f.Glitch(0)
			if r := get(t, g.URL+api); r.errcode() != 0 {
				t.Fatalf("the first call after the glitch: %s", r.Body)
			}
		}},
		// A token fetched a moment ago, to replace a revoked one.
		{"after a fresh fetch", func(t *testing.T, f *fakeWeChat, g *runningCaddy) {
			f.RevokeAll()
			if r := get(t, g.URL+api); r.errcode() != 0 {
				t.Fatalf("the call that met the first revocation: %s", r.Body)
			}
		}},
	}
	for _, api0 := range []string{credential.APIStable, credential.APIClassic} {
		for _, store := range []string{"", "memcache " + mc.Addr} {
			for _, sc := range scenarios {
				name := api0 + "/" + sc.name
				if store != "" {
					name += "/memcache"
				}
				t.Run(name, func(t *testing.T) {
					mc.FlushAll()
					f, g := setup(t, "token_api "+api0+"\n\t\tmin_token_age 60s\n\t\t"+store)
					if r := get(t, g.URL+api); r.errcode() != 0 {
						t.Fatal(string(r.Body))
					}
					sc.before(t, f, g)
					time.Sleep(500 * time.Millisecond) // the revocation lands 0.5 s after the evidence
					f.RevokeAll()
					probes, fetches := f.Fetches("probe"), f.Fetches(api0)
					if r := get(t, g.URL+api); r.Status != 200 || r.errcode() != 0 {
						t.Fatalf("the first call after the revocation: %d %s", r.Status, r.Body)
					}
					if p, n := f.Fetches("probe")-probes, f.Fetches(api0)-fetches; p > 1 || n > 1 {
						t.Errorf("the repair cost %d probes and %d fetches; want at most one each", p, n)
					}
					if n := f.Fetches("stable_force"); n != 0 {
						t.Errorf("%d force_refresh", n)
					}
				})
			}
		}
	}
}

// A probe that WeChat answers with a non-token errcode (-1 busy, 45009
// quota) is no verdict: through a real Caddy the token is kept (WeChat's
// own 40001 reaches the caller; no fetch), and the probes space out
// instead of following every 40001.
func TestProbeWithoutVerdictThroughCaddy(t *testing.T) {
	for _, code := range []string{"-1", "45009"} {
		t.Run(code, func(t *testing.T) {
			f, g := setup(t, "min_token_age 60s")
			if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
				t.Fatal(string(r.Body))
			}
			var probes atomic.Int64
			f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path != "/cgi-bin/get_api_domain_ip" {
					return false
				}
				probes.Add(1)
				io.WriteString(w, `{"errcode":`+code+`,"errmsg":"busy rid: x"}`)
				return true
			})
			for range 50 {
				if r := get(t, g.URL+fakewechat.AlwaysInvalidPath); r.Status != 200 || r.errcode() != 40001 {
					t.Fatalf("the 40001-only API: %d %s", r.Status, r.Body)
				}
			}
			if n := f.Fetches("stable"); n != 1 {
				t.Errorf("a probe without verdict cost %d fetches; want 1 (the first)", n)
			}
			if n := probes.Load(); n < 1 || n > 3 {
				t.Errorf("50 quick 40001s with the probe answering %s: %d probes; want 1 to 3 (1 s doubling)", code, n)
			}
			if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
				t.Errorf("the token was dropped: %s", r.Body)
			}
		})
	}
}

// Probes stay bounded whatever callers do: through a real Caddy, 40 callers
// hammering APIs that answer 40001 whatever the token, each on paths of
// its own, for 2 s cost at most one probe a second, no fetch, and every
// call of a normal API in between succeeds.
func TestProbesBoundedThroughCaddy(t *testing.T) {
	f, g := setup(t, "min_token_age 60s")
	if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
		t.Fatal(string(r.Body))
	}
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/cgi-bin/test/any40001/") {
			return false
		}
		io.WriteString(w, `{"errcode":40001,"errmsg":"invalid credential rid: x"}`)
		return true
	})
	start := time.Now()
	var failed atomic.Int64
	parallel(40, func(i int) {
		for n := 0; time.Since(start) < 2*time.Second; n++ {
			r := get(t, g.URL+"/cgi-bin/test/any40001/"+strconv.Itoa(i)+"/"+strconv.Itoa(n))
			if r.errcode() != 40001 {
				failed.Add(1)
			}
			if n%5 == 0 {
				if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
					failed.Add(1)
				}
			}
		}
	})
	spent := time.Since(start)
	t.Logf("%v, 40 callers of 40001-only paths: %d probes, %d fetches", spent.Round(time.Millisecond), f.Fetches("probe"), f.Fetches("stable"))
	if n := failed.Load(); n != 0 {
		t.Errorf("%d calls answered other than WeChat would", n)
	}
	if p := f.Fetches("probe"); float64(p) > spent.Seconds()+2 {
		t.Errorf("%v of 40001s on ever new paths: %d probes; want at most one a second", spent, p)
	}
	if n := f.Fetches("stable"); n != 1 {
		t.Errorf("%d fetches; want 1 (the first)", n)
	}
}
