package integration

// Hardening tests (issue 7): where requests can go, through a real Caddy
// against the fake.

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func TestHostileRequestTargets(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	var seen reqLog
	logAll(f, &seen, nil)
	evil := newEvil(t)
	g := startCaddy(t, anyHost(f.URL, ""))
	fakeHost := strings.TrimPrefix(f.URL, "http://")
	gw := strings.TrimPrefix(g.URL, "http://")
	E := evil.addr()
	waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second) // warm the token

	cases := []struct{ name, raw string }{
		{"absolute-form", "GET http://" + E + "/cgi-bin/user/info?x=1 HTTP/1.1\r\nHost: " + E + "\r\n\r\n"},
		{"absolute-form, Host differs", "GET http://" + E + "/cgi-bin/user/info HTTP/1.1\r\nHost: " + gw + "\r\n\r\n"},
		{"absolute-form https", "GET https://" + E + "/cgi-bin/user/info HTTP/1.1\r\nHost: " + E + "\r\n\r\n"},
		{"absolute-form userinfo", "GET http://u:p@" + E + "/cgi-bin/user/info HTTP/1.1\r\nHost: " + E + "\r\n\r\n"},
		{"absolute-form login", "GET http://" + E + "/sns/jscode2session?js_code=c&grant_type=authorization_code HTTP/1.1\r\nHost: " + E + "\r\n\r\n"},
		{"double slash", "GET //" + E + "/cgi-bin/user/info HTTP/1.1\r\nHost: " + gw + "\r\n\r\n"},
		{"triple slash", "GET ///" + E + "/cgi-bin/user/info HTTP/1.1\r\nHost: " + gw + "\r\n\r\n"},
		{"CONNECT", "CONNECT " + E + " HTTP/1.1\r\nHost: " + E + "\r\n\r\n"},
		{"CONNECT to gateway host", "CONNECT " + gw + " HTTP/1.1\r\nHost: " + E + "\r\n\r\n"},
		{"encoded dotdot", "GET /cgi-bin/%2e%2e/%2e%2e/" + E + "/x HTTP/1.1\r\nHost: " + gw + "\r\n\r\n"},
		{"encoded slash dotdot", "GET /cgi-bin/..%2f..%2f..%2f" + E + "%2fx HTTP/1.1\r\nHost: " + gw + "\r\n\r\n"},
		{"encoded slash", "GET /cgi-bin%2fuser%2finfo HTTP/1.1\r\nHost: " + gw + "\r\n\r\n"},
		{"hostile Host", "GET /cgi-bin/user/info HTTP/1.1\r\nHost: " + E + "\r\n\r\n"},
		{"hostile Host name", "GET /cgi-bin/user/info HTTP/1.1\r\nHost: evil.example\r\n\r\n"},
		{"forwarding headers", "GET /cgi-bin/user/info HTTP/1.1\r\nHost: " + gw + "\r\nX-Forwarded-Host: " + E + "\r\nForwarded: host=" + E + "\r\nX-Original-URL: http://" + E + "/\r\n\r\n"},
		{"encoded CRLF in query", "GET /cgi-bin/user/info?a=1%0d%0aHost:%20" + E + "%0d%0a HTTP/1.1\r\nHost: " + gw + "\r\n\r\n"},
		{"raw CR in query", "GET /cgi-bin/user/info?a=1\rHost: " + E + " HTTP/1.1\r\nHost: " + gw + "\r\n\r\n"},
		{"raw LF in query", "GET /cgi-bin/user/info?a=1\nHost: " + E + " HTTP/1.1\r\nHost: " + gw + "\r\n\r\n"},
		{"raw CRLF in query", "GET /cgi-bin/user/info?a=1\r\nHost: " + E + "\r\n HTTP/1.1\r\nHost: " + gw + "\r\n\r\n"},
		{"at-sign target", "GET @" + E + "/cgi-bin/user/info HTTP/1.1\r\nHost: " + gw + "\r\n\r\n"},
		{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: " + E + "\r\n\r\n"},
		{"HTTP/1.0 no Host", "GET http://" + E + "/cgi-bin/user/info HTTP/1.0\r\n\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := len(seen.all())
			r := rawDo(gw, c.raw)
			got := seen.since(before)
			// Go's server answers "OPTIONS *" itself, with an empty 200.
			if r.Err == nil && r.Status < 400 && len(got) == 0 && !(c.name == "asterisk" && r.Body == "") {
				t.Errorf("answered %d without the upstream or a refusal: %q", r.Status, r.Body)
			}
			for _, s := range got {
				if s.Host != fakeHost {
					t.Errorf("upstream received Host %q (URI %q), want its own %q", s.Host, s.URI, fakeHost)
				}
				if strings.Contains(s.URI, "://") {
					t.Errorf("upstream received an absolute URI %q", s.URI)
				}
			}
			if r.Status == 200 {
				var echo struct{ Host string }
				if json.Unmarshal([]byte(r.Body), &echo) == nil && echo.Host != "" && echo.Host != fakeHost {
					t.Errorf("echo shows Host %q, want %q", echo.Host, fakeHost)
				}
			}
			if n := evil.accepted.Load(); n != 0 {
				t.Fatalf("the evil listener accepted %d connections", n)
			}
			t.Logf("status %d err %v, upstream saw %v", r.Status, r.Err, got)
		})
	}
	// The gateway still works, and never talked to evil.
	waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second)
	time.Sleep(200 * time.Millisecond)
	if n := evil.accepted.Load(); n != 0 {
		t.Fatalf("the evil listener accepted %d connections", n)
	}
}

// A reload that fails must leave the running config exactly as it was:
// in particular its token fetches must keep going to its own upstream, not
// to the upstream named in the config that was rejected.
func TestFailedReloadKeepsUpstream(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	other := newFake(t) // the upstream of the rejected config
	g := startCaddy(t, basicConfig(f.URL, ""))
	waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second)

	port := strings.TrimPrefix(g.URL, "http://127.0.0.1:")
	admin := strings.TrimPrefix(g.Admin, "127.0.0.1:")
	bad := fmt.Sprintf(`{
	admin 127.0.0.1:%s
}
http://127.0.0.1:%s {
	handle /a/* {
		wechat {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream %s
		}
	}
	handle {
		wechat {
			appid {env.TEST_WECHAT_UNSET_FOR_FAILED_RELOAD}
			secret {env.TEST_WECHAT_SECRET}
			upstream %s
		}
	}
}
`, admin, port, other.URL, other.URL)
	cfg, err := adaptCaddyfile(bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err == nil {
		t.Fatal("the config with an empty appid loaded")
	}
	// The old config still serves; a token error makes it fetch anew.
	f.RevokeAll()
	if r := get(t, g.URL+"/cgi-bin/user/info"); r.Status != 200 || r.errcode() != 0 {
		t.Errorf("after the failed reload: %d %s", r.Status, r.Body)
	}
	if n := other.Fetches("stable"); n != 0 {
		t.Errorf("the running config fetched %d tokens from the rejected config's upstream", n)
	}
	if n := f.Fetches("stable"); n != 2 {
		t.Errorf("fetches from the running config's upstream = %d, want 2", n)
	}
}
