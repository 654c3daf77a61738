package integration

// What a token WeChat rejects costs, through a real Caddy: an API that
// rejects every token, a WeChat-wide glitch, the daily fetch ceiling.

import (
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/fakewechat"
)

// Issue 10 §2 through a real Caddy and the fake: an API that answers
// 40001 whatever the token costs no fetch and no force_refresh, while
// every other call succeeds.
func TestAlways40001PathCostsNoFetch(t *testing.T) {
	mc := startMemcached(t)
	for _, c := range []struct{ api, store string }{
		{"stable", ""}, {"classic", ""},
		{"stable", "memcache " + mc.Addr}, {"classic", "memcache " + mc.Addr},
	} {
		api, name := c.api, c.api
		if c.store != "" {
			name += "/memcache"
		}
		t.Run(name, func(t *testing.T) {
			mc.FlushAll()
			f, g := setup(t, "token_api "+api+"\n\t\t"+c.store)
			if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
				t.Fatal(r.Body)
			}
			for i := range 200 {
				if r := get(t, g.URL+fakewechat.AlwaysInvalidPath); r.Status != 200 || r.errcode() != 40001 {
					t.Fatalf("the always-40001 API: want WeChat's own 40001, got %d %s", r.Status, r.Body)
				}
				if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
					t.Fatalf("call %d of another API failed: %s", i, r.Body)
				}
			}
			if n := f.Fetches(api); n != 1 {
				t.Errorf("%d token fetches; want 1 (the first)", n)
			}
			if row := onlyAccountRow(t, g); (c.store != "") != row.Shared {
				t.Errorf("store %q: the status says store=%v", c.store, row.Shared)
			}
			if n := f.Fetches("stable_force"); n != 0 {
				t.Errorf("%d force_refresh", n)
			}
			if n, calls := f.Fetches("probe"), f.Fetches("always_40001"); n > 3 || calls != 200 {
				t.Errorf("%d probes for %d calls; want a few (one verdict per 30 s)", n, calls)
			}
		})
	}
}

// A WeChat-wide glitch (every token rejected) costs one fetch: the first
// rejection is probed and the token replaced; the replacement fails too,
// and being younger than the minimum age it is kept, however many requests
// fail. Stable's "fetch" hands back the same token, which is kept. The
// first request after the glitch succeeds.
func TestGlitchThenRecovery(t *testing.T) {
	for _, c := range []struct {
		name, extra string
		maxFetches  int
	}{
		{"stable", "min_token_age 60s", 2},
		{"classic", "token_api classic\n\t\tmin_token_age 60s", 2},
		{"stable/no_min_age", "", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, g := setup(t, c.extra)
			if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
				t.Fatal(r.Body)
			}
			f.Glitch(time.Hour)
			for range 20 {
				if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 40001 {
					t.Fatalf("during the glitch: %s", r.Body)
				}
			}
			f.Glitch(0)
			if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
				t.Fatalf("first request after the glitch: %s", r.Body)
			}
			n := f.Fetches("stable") + f.Fetches("classic")
			if n > c.maxFetches || f.Fetches("stable_force") != 0 {
				t.Errorf("the glitch cost %d fetches (%d forced); want ≤ %d and 0", n, f.Fetches("stable_force"), c.maxFetches)
			}
		})
	}
}

// The daily fetch ceiling: past it the client gets a clear error, and the
// status view and the metrics say so.
func TestFetchCeilingThroughCaddy(t *testing.T) {
	f, g := setup(t, "token_api classic\n\t\tfetch_ceiling 2")
	var last result
	for range 4 {
		last = get(t, g.URL+"/cgi-bin/user/info")
		f.RevokeAll()
	}
	if n := f.Fetches("classic"); n != 2 {
		t.Errorf("%d fetches with a ceiling of 2", n)
	}
	if last.Status != 503 || !strings.Contains(string(last.Body), "ceiling") {
		t.Errorf("past the ceiling: %d %s", last.Status, last.Body)
	}
	st := get(t, "http://"+g.Admin+"/wechat/status")
	if !strings.Contains(string(st.Body), `"ceiling_reached":true`) {
		t.Errorf("status view: %s", st.Body)
	}
	m := get(t, "http://"+g.Admin+"/metrics")
	if !strings.Contains(string(m.Body), "caddy_wechat_fetch_ceiling_reached{") || !strings.Contains(string(m.Body), "caddy_wechat_fetch_ceiling_refusals_total{") {
		t.Error("/metrics lacks the ceiling series")
	}
}
