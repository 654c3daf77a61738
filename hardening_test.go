package wechat

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Hardening tests (issue 7): where requests can go, what happens to
// client-supplied credentials, upstream and token endpoint faults, and
// hostile client behaviour. All run through a real Caddy against the fake.

// --- helpers ---

// seenReq is one request as the fake's HTTP server received it.
type seenReq struct {
	Method, Host, URI, Path, RawQuery string
}

// reqLog records every request that reaches the fake, whatever its path
// (LastAPIQuery covers API calls only, not /sns/* or the token endpoints).
type reqLog struct {
	mu   sync.Mutex
	reqs []seenReq
}

func (l *reqLog) record(r *http.Request) {
	l.mu.Lock()
	l.reqs = append(l.reqs, seenReq{r.Method, r.Host, r.RequestURI, r.URL.Path, r.URL.RawQuery})
	l.mu.Unlock()
}

func (l *reqLog) all() []seenReq {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]seenReq(nil), l.reqs...)
}

func (l *reqLog) since(n int) []seenReq { return l.all()[n:] }

// logAll makes the fake record every request, then run next (may be nil).
func logAll(f *fakeWeChat, l *reqLog, next func(w http.ResponseWriter, r *http.Request) bool) {
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		l.record(r)
		return next != nil && next(w, r)
	})
}

// evilListener stands in for a host the gateway must never talk to: it
// counts every connection it accepts and answers nothing.
type evilListener struct {
	ln       net.Listener
	accepted atomic.Int32
}

func newEvil(t *testing.T) *evilListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &evilListener{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return e
}

func (e *evilListener) addr() string { return e.ln.Addr().String() }

// rawResult is an answer to a request written raw on a TCP connection.
type rawResult struct {
	Status int
	Header http.Header
	Body   string
	Err    error // no parseable answer, or the body broke off
}

// rawDo writes raw to addr on a fresh connection and reads one response.
func rawDo(addr, raw string) rawResult {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return rawResult{Err: err}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		return rawResult{Err: err}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return rawResult{Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return rawResult{Status: resp.StatusCode, Header: resp.Header, Body: string(b), Err: err}
}

// tryGet is get without failing the test on a transport error: fault tests
// look at exactly what the client received.
func tryGet(url string) (status int, body []byte, err error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// anyHost is basicConfig for a site that answers every Host, so a hostile
// Host header or absolute-form URI reaches the wechat handler.
func anyHost(upstream, extra string) string {
	return strings.Replace(basicConfig(upstream, extra), "http://127.0.0.1:%[1]d {", "http://:%[1]d {\n\tbind 127.0.0.1", 1)
}

// onlyAccount returns the single account in the pool.
func onlyAccount(t *testing.T) *account {
	t.Helper()
	var got []*account
	accounts.Range(func(_, v any) bool {
		got = append(got, v.(*account))
		return true
	})
	if len(got) != 1 {
		t.Fatalf("%d accounts in the pool, want 1", len(got))
	}
	return got[0]
}

// waitOK polls url until it answers 200 with errcode 0 or within passes.
func waitOK(t *testing.T, url string, within time.Duration) result {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := get(t, url)
		if r.Status == 200 && r.errcode() == 0 {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not recover within %s: last %d %s", url, within, r.Status, r.Body)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// --- 1. where requests can go ---

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
	cfg, err := adapt(bad)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddyLoad(cfg); err == nil {
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

// --- 2. client-supplied credential parameters ---

// credKeys returns the values of every key in raw that names name once
// percent-decoded, trimmed and compared case-insensitively (ASCII): what a
// lenient server would read as that parameter.
func credKeys(raw, name string) []string {
	var vals []string
	for part := range strings.SplitSeq(raw, "&") {
		k, v, _ := strings.Cut(part, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if asciiEqualFold(strings.Trim(k, " \t\r\n\v\f"), name) {
			if dv, err := url.QueryUnescape(v); err == nil {
				v = dv
			}
			vals = append(vals, v)
		}
	}
	return vals
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

const (
	clientToken  = "CLIENTTOKENxyz"
	clientSecret = "CLIENTSECRETxyz"
	clientAppID  = "wxCLIENTAPPIDxyz"
)

func TestClientCredentialParams(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	var seen reqLog
	logAll(f, &seen, nil)
	g := startCaddy(t, basicConfig(f.URL, ""))
	waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second)

	// Ordinary API calls: the client's access_token and secret are
	// dropped in every spelling; the gateway's token is the only one.
	tokenCases := []string{
		"access_token=" + clientToken,
		"ACCESS_TOKEN=" + clientToken,
		"Access_Token=" + clientToken,
		"access_token=" + clientToken + "&access_token=" + clientToken + "2",
		"access_token=" + clientToken + "&openid=o1&ACCESS_token=" + clientToken + "2",
		"acc%65ss_token=" + clientToken,
		"access%5Ftoken=" + clientToken,
		"%61%63%63%65%73%73%5F%74%6F%6B%65%6E=" + clientToken,
		"access_token%20=" + clientToken,
		"%20access_token=" + clientToken,
		"access_token+=" + clientToken,
		"+access_token=" + clientToken,
		"%09access_token%0A=" + clientToken,
		"access_token",
		"access_token=",
		"access_token=&access_token",
		"secret=" + clientSecret,
		"SECRET=" + clientSecret,
		"secr%65t=" + clientSecret,
		"secret+=" + clientSecret + "&secret=" + clientSecret,
		"access_token%=" + clientToken,
		"a=1&&&access_token=" + clientToken + "&&b=2",
	}
	for _, q := range tokenCases {
		t.Run("api?"+q, func(t *testing.T) {
			before := len(seen.all())
			r := get(t, g.URL+"/cgi-bin/user/info?openid=o1&"+q)
			if r.Status != 200 || r.errcode() != 0 {
				t.Errorf("status %d body %s", r.Status, r.Body)
			}
			got := seen.since(before)
			if len(got) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(got))
			}
			raw := got[0].RawQuery
			if toks := credKeys(raw, "access_token"); len(toks) != 1 || toks[0] != f.CurrentStable() {
				t.Errorf("upstream query %q has access_token %q, want exactly the gateway's", raw, toks)
			}
			if s := credKeys(raw, "secret"); len(s) != 0 {
				t.Errorf("client secret forwarded: %q", raw)
			}
			if strings.Contains(raw, clientToken) || strings.Contains(raw, clientSecret) {
				t.Errorf("client credential value forwarded: %q", raw)
			}
			if q := f.LastAPIQuery(); len(q["access_token"]) != 1 || q.Get("access_token") != f.CurrentStable() || q.Get("openid") != "o1" {
				t.Errorf("LastAPIQuery %v", q)
			}
		})
	}

	// An appid on an ordinary API call is the client's business (some
	// APIs take another app's appid): forwarded unchanged.
	t.Run("api appid kept", func(t *testing.T) {
		before := len(seen.all())
		get(t, g.URL+"/cgi-bin/user/info?appid="+clientAppID)
		got := seen.since(before)
		if len(got) != 1 || strings.Join(credKeys(got[0].RawQuery, "appid"), ",") != clientAppID {
			t.Errorf("upstream saw %v, want the client's appid kept", got)
		}
	})

	// Login: the gateway's appid and secret replace the client's, in
	// every spelling; an access_token (ours or theirs) is never sent.
	loginCases := []string{
		"",
		"appid=" + clientAppID + "&secret=" + clientSecret,
		"APPID=" + clientAppID + "&Secret=" + clientSecret,
		"app%69d=" + clientAppID + "&secr%65t=" + clientSecret,
		"appid=" + clientAppID + "&appid=" + clientAppID + "2&secret=" + clientSecret + "&secret=",
		"+appid+=" + clientAppID + "&%20secret=" + clientSecret,
		"access_token=" + clientToken,
		"ACCESS_TOKEN=" + clientToken + "&appid=" + clientAppID,
	}
	for _, q := range loginCases {
		t.Run("jscode2session?"+q, func(t *testing.T) {
			before := len(seen.all())
			r := get(t, g.URL+"/sns/jscode2session?js_code=C1&grant_type=authorization_code&"+q)
			if r.Status != 200 || r.errcode() != 0 || r.JSON["openid"] == nil {
				t.Errorf("login failed: %d %s", r.Status, r.Body)
			}
			if strings.Contains(string(r.Body), testSecret) {
				t.Error("the gateway's secret reached the client")
			}
			got := seen.since(before)
			if len(got) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(got))
			}
			raw := got[0].RawQuery
			if a := credKeys(raw, "appid"); len(a) != 1 || a[0] != testAppID {
				t.Errorf("upstream appid %q in %q, want exactly the gateway's", a, raw)
			}
			if s := credKeys(raw, "secret"); len(s) != 1 || s[0] != testSecret {
				t.Errorf("upstream secret count %d in query, want exactly the gateway's", len(s))
			}
			if tk := credKeys(raw, "access_token"); len(tk) != 0 {
				t.Errorf("access_token sent to a login endpoint: %q", raw)
			}
			if strings.Contains(raw, clientAppID) || strings.Contains(raw, clientSecret) || strings.Contains(raw, clientToken) {
				t.Errorf("client credential forwarded: %q", raw)
			}
		})
	}

	// refresh_token takes appid only: the client's secret is dropped too.
	t.Run("oauth2 refresh_token", func(t *testing.T) {
		before := len(seen.all())
		get(t, g.URL+"/sns/oauth2/refresh_token?grant_type=refresh_token&refresh_token=R&appid="+clientAppID+"&secret="+clientSecret)
		got := seen.since(before)
		if len(got) != 1 {
			t.Fatalf("upstream got %d requests", len(got))
		}
		raw := got[0].RawQuery
		if a := credKeys(raw, "appid"); len(a) != 1 || a[0] != testAppID {
			t.Errorf("appid %q, want the gateway's", a)
		}
		if len(credKeys(raw, "secret")) != 0 || len(credKeys(raw, "access_token")) != 0 {
			t.Errorf("secret or token sent with refresh_token: %q", raw)
		}
	})

	// Other /sns calls carry the user's own OAuth token: untouched, and
	// the gateway's token never goes there.
	t.Run("sns user token untouched", func(t *testing.T) {
		r := get(t, g.URL+"/sns/oauth2/access_token?grant_type=authorization_code&code=CODE1")
		user, _ := r.JSON["access_token"].(string)
		if user == "" {
			t.Fatalf("no user token: %s", r.Body)
		}
		before := len(seen.all())
		q := "access_token=" + url.QueryEscape(user) + "&openid=o1&lang=zh_CN"
		r = get(t, g.URL+"/sns/userinfo?"+q)
		got := seen.since(before)
		if len(got) != 1 || got[0].RawQuery != q {
			t.Fatalf("upstream saw %v, want the query %q unchanged", got, q)
		}
		if strings.Contains(got[0].RawQuery, f.CurrentStable()) {
			t.Error("the gateway's token was sent to /sns/userinfo")
		}
		if r.Status != 200 || r.errcode() != 0 {
			t.Errorf("userinfo: %d %s", r.Status, r.Body)
		}
	})

	// The token endpoints are the gateway's own, however the path is spelled.
	for _, p := range []string{"/cgi-bin/token?grant_type=client_credential&appid=" + clientAppID + "&secret=" + clientSecret,
		"/cgi-bin/stable_token", "/cgi-bin/gettoken?corpid=c&corpsecret=s", "/cgi-bin/../cgi-bin/token",
		"/cgi-bin/%2e%2e/cgi-bin/stable_token", "//cgi-bin//token", "/cgi-bin/stable_token/", "/x/..%2fcgi-bin%2ftoken"} {
		t.Run("blocked "+p, func(t *testing.T) {
			before := len(seen.all())
			r := rawDo(strings.TrimPrefix(g.URL, "http://"), "GET "+p+" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
			if r.Status != http.StatusForbidden {
				t.Errorf("status %d (%v), want 403", r.Status, r.Err)
			}
			if got := seen.since(before); len(got) != 0 {
				t.Errorf("forwarded to the upstream: %v", got)
			}
		})
	}

	// Nothing the gateway logged holds its secret or token.
	logText := readFile(t, g.LogFile)
	if strings.Contains(logText, testSecret) || strings.Contains(logText, f.CurrentStable()) {
		t.Error("the Caddy log holds the gateway's secret or token")
	}
}

// --- 3. upstream faults ---

// rawFront is a raw TCP listener in front of the fake. In "forward" mode it
// splices connections to the fake; in "hang" mode it accepts, reads, and
// never answers.
type rawFront struct {
	ln     net.Listener
	target string
	hang   atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func newRawFront(t *testing.T, target string) *rawFront {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &rawFront{ln: ln, target: target, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.dropAll() })
	return p
}

func (p *rawFront) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

// dropAll closes every open connection, so the next request dials anew.
func (p *rawFront) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

func (p *rawFront) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c, true)
		go func() {
			defer func() { c.Close(); p.track(c, false) }()
			if p.hang.Load() {
				_, _ = io.Copy(io.Discard, c) // accepted; never a byte back
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				return
			}
			p.track(up, true)
			defer func() { up.Close(); p.track(up, false) }()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			if _, err := io.Copy(c, up); err != nil {
				// Pass a reset on as a reset.
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
			}
		}()
	}
}

// hijackWrite answers with raw bytes and ends the connection, with a reset
// when rst is set.
func hijackWrite(w http.ResponseWriter, raw string, rst bool) {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	_, _ = buf.WriteString(raw)
	_ = buf.Flush()
	if rst {
		time.Sleep(50 * time.Millisecond) // let the bytes leave first
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	conn.Close()
}

func TestUpstreamFaults(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	front := newRawFront(t, strings.TrimPrefix(f.URL, "http://"))
	const (
		htmlPage = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"
		cutJSON  = `{"errcode":0,"errmsg":"ok","user_list":[{"openid":"o1","la`
		partial  = `{"errcode":0,"errmsg":"ok","data":"` // then the body breaks off
	)
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		switch r.URL.Path {
		case "/test/500":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(500)
			io.WriteString(w, `{"errcode":-1,"errmsg":"system error"}`)
		case "/test/html502":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			io.WriteString(w, htmlPage)
		case "/test/html200":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, htmlPage)
		case "/test/cut-json":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, cutJSON)
		case "/test/reset-mid-body":
			hijackWrite(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n"+partial, true)
		case "/test/short-body":
			hijackWrite(w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 300\r\n\r\n"+partial, false)
		case "/test/chunked-cut":
			hijackWrite(w, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", len(partial), partial), false)
		default:
			return false
		}
		return true
	})
	g := startCaddy(t, basicConfig("http://"+front.ln.Addr().String(), "response_header_timeout 1s"))
	waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second)
	fetches := f.Fetches("stable")

	check := func(t *testing.T, path string, want func(status int, body []byte, err error) string) {
		t.Helper()
		start := time.Now()
		status, body, err := tryGet(g.URL + path)
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("answered after %s, want well within 10 s", d)
		}
		if msg := want(status, body, err); msg != "" {
			t.Errorf("%s: %s (got status %d, err %v, body %q)", path, msg, status, err, body)
		}
		// The next request works.
		if r := get(t, g.URL+"/cgi-bin/user/info?after="+url.QueryEscape(path)); r.Status != 200 || r.errcode() != 0 {
			t.Errorf("request after %s: %d %s", path, r.Status, r.Body)
		}
	}
	clear5xx := func(status int, body []byte, err error) string {
		if err != nil {
			return "the client's read failed instead of getting a clear 5xx"
		}
		if status < 500 || status > 599 {
			return "want a 5xx"
		}
		return ""
	}
	exactly := func(code int, want string) func(int, []byte, error) string {
		return func(status int, body []byte, err error) string {
			if err != nil || status != code || string(body) != want {
				return fmt.Sprintf("want %d with the upstream's body byte for byte", code)
			}
			return ""
		}
	}

	t.Run("hangs after accepting", func(t *testing.T) {
		front.hang.Store(true)
		front.dropAll()
		status, body, err := tryGet(g.URL + "/cgi-bin/user/info?hang=1")
		front.hang.Store(false)
		front.dropAll()
		if err != nil || status < 500 {
			t.Errorf("hung upstream: status %d err %v body %s, want a clear 5xx", status, err, body)
		}
		if r := get(t, g.URL+"/cgi-bin/user/info"); r.Status != 200 || r.errcode() != 0 {
			t.Errorf("request after the hang: %d %s", r.Status, r.Body)
		}
	})
	t.Run("HTTP 500", func(t *testing.T) { check(t, "/test/500", exactly(500, `{"errcode":-1,"errmsg":"system error"}`)) })
	t.Run("HTML 502", func(t *testing.T) { check(t, "/test/html502", exactly(502, htmlPage)) })
	// A complete 200 answer is WeChat's to make: HTML or cut-off JSON is
	// passed on byte for byte (the gateway cannot tell it from an API that
	// answers so), with no token refetch.
	t.Run("HTML 200 passed through", func(t *testing.T) { check(t, "/test/html200", exactly(200, htmlPage)) })
	t.Run("complete but cut JSON passed through", func(t *testing.T) { check(t, "/test/cut-json", exactly(200, cutJSON)) })
	// A body that breaks off is a fault the gateway sees before it has
	// sent anything (it reads small answers to sniff the errcode): it must
	// answer a clear 5xx, not a 200 with a truncated body.
	t.Run("reset mid-body", func(t *testing.T) { check(t, "/test/reset-mid-body", clear5xx) })
	t.Run("connection closed before Content-Length", func(t *testing.T) { check(t, "/test/short-body", clear5xx) })
	t.Run("chunked body cut off", func(t *testing.T) { check(t, "/test/chunked-cut", clear5xx) })

	if n := f.Fetches("stable"); n != fetches {
		t.Errorf("upstream faults caused %d token fetches, want none", n-fetches)
	}
}

// setExpiresIn makes the fake's stable_token answers carry expires_in as
// the raw JSON text v ("" = no expires_in), keeping the real token.
func setExpiresIn(f *fakeWeChat, v string) {
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/cgi-bin/stable_token" {
			return false
		}
		rec := httptest.NewRecorder()
		f.Server.ServeHTTP(rec, r)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil || m["access_token"] == nil {
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
			return true
		}
		delete(m, "expires_in")
		if v != "" {
			m["expires_in"] = json.RawMessage(v)
		}
		b, _ := json.Marshal(m)
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
		return true
	})
}

func TestTokenExpiresInClamped(t *testing.T) {
	for _, v := range []string{"", "0", "-5", "1", `"7200"`, "7200.5", "31536000", "9223372037", "18446744074", "9223372036854775807", "1e30", "null"} {
		t.Run("expires_in="+v, func(t *testing.T) {
			resetAccounts(t)
			setEnv(t)
			f := newFake(t)
			setExpiresIn(f, v)
			g := startCaddy(t, basicConfig(f.URL, ""))
			waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second)
			e := onlyAccount(t).cur.Load()
			if e == nil {
				t.Fatal("no token cached")
			}
			ttl := e.ExpiresAt.Sub(e.FetchedAt)
			if ttl <= 0 || ttl > 7200*time.Second {
				t.Errorf("cached for %s (ExpiresAt %s), want within (0, 7200 s]", ttl, e.ExpiresAt)
			}
			if v != "1" && !time.Now().Before(e.useBy) {
				t.Errorf("token unusable at once: useBy %s", e.useBy)
			}
			before := f.Fetches("stable")
			for range 5 {
				get(t, g.URL+"/cgi-bin/user/info")
			}
			if n := f.Fetches("stable") - before; v != "1" && n != 0 {
				t.Errorf("5 requests made %d more token fetches, want 0", n)
			}
		})
	}
}

func TestTokenEndpointFaults(t *testing.T) {
	cases := []struct {
		name  string
		set   func(f *fakeWeChat)
		clear func(f *fakeWeChat)
		extra string
		want  string // in the client's errmsg
	}{
		{"garbage", func(f *fakeWeChat) { f.SetTokenResponse("\x00\xff<<garbage>>") }, func(f *fakeWeChat) { f.SetTokenResponse("") }, "", "not JSON"},
		{"html", func(f *fakeWeChat) { f.SetTokenResponse("<html><body>maintenance</body></html>") }, func(f *fakeWeChat) { f.SetTokenResponse("") }, "", "not JSON"},
		{"empty access_token", func(f *fakeWeChat) { f.SetTokenResponse(`{"access_token":"","expires_in":7200}`) }, func(f *fakeWeChat) { f.SetTokenResponse("") }, "", "no access_token"},
		{"no access_token", func(f *fakeWeChat) { f.SetTokenResponse(`{"expires_in":7200}`) }, func(f *fakeWeChat) { f.SetTokenResponse("") }, "", "no access_token"},
		{"JSON array", func(f *fakeWeChat) { f.SetTokenResponse(`[1,2,3]`) }, func(f *fakeWeChat) { f.SetTokenResponse("") }, "", "not JSON"},
		{"HTTP 502 page", func(f *fakeWeChat) { f.SetTokenDown(502) }, func(f *fakeWeChat) { f.SetTokenDown(0) }, "", "HTTP 502"},
		{"hangs", func(f *fakeWeChat) { f.SetTokenDelay(30 * time.Second) }, func(f *fakeWeChat) { f.SetTokenDelay(0) }, "fetch_timeout 1s", "deadline"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resetAccounts(t)
			setEnv(t)
			f := newFake(t)
			c.set(f)
			g := startCaddy(t, basicConfig(f.URL, c.extra))
			start := time.Now()
			r := get(t, g.URL+"/cgi-bin/user/info")
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("answered after %s", d)
			}
			if r.Status != http.StatusBadGateway && r.Status != http.StatusServiceUnavailable {
				t.Errorf("status %d, want 502/503: %s", r.Status, r.Body)
			}
			if r.Header.Get("X-Wechat-Gateway") != "error" || !strings.Contains(string(r.Body), c.want) {
				t.Errorf("want a gateway error naming %q, got %s", c.want, r.Body)
			}
			if strings.Contains(string(r.Body), testSecret) {
				t.Error("secret in the error")
			}
			c.clear(f)
			waitOK(t, g.URL+"/cgi-bin/user/info", 15*time.Second)
			// Backoff: the failure plus the recovery, not a fetch per request.
			if n := f.Fetches("stable"); n > 3 {
				t.Errorf("%d token fetches, want at most 3 (backoff)", n)
			}
		})
	}
}

// --- 5. client behaviour ---

// A client that hangs up while others wait on the same token fetch does
// not cancel that fetch.
func TestHangupDuringSharedFetch(t *testing.T) {
	f, g := setup(t, "")
	f.SetTokenDelay(time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	quitter := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/cgi-bin/user/info?who=quitter", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		quitter <- err
	}()
	time.Sleep(100 * time.Millisecond) // the quitter's fetch is in flight
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := get(t, g.URL+"/cgi-bin/user/info?who="+itoa(i)); r.Status != 200 || r.errcode() != 0 {
				bad.Add(1)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-quitter; err == nil {
		t.Error("the quitter got an answer; it should have hung up first")
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d waiting requests failed after another client hung up", bad.Load())
	}
	if n := f.Fetches("stable"); n != 1 {
		t.Errorf("fetches = %d, want 1 (the shared fetch must survive the hang-up)", n)
	}
}

// A body trickled in over seconds does not hold up other requests.
func TestSlowUploadDoesNotBlockOthers(t *testing.T) {
	_, g := setup(t, "")

	const chunks, chunk = 30, 100
	body := []byte(strings.Repeat("z", chunks*chunk))
	pr, pw := io.Pipe()
	var sent atomic.Int32
	go func() {
		for i := range chunks {
			if _, err := pw.Write(body[i*chunk : (i+1)*chunk]); err != nil {
				return
			}
			sent.Add(1)
			time.Sleep(100 * time.Millisecond)
		}
		pw.Close()
	}()
	slow := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, g.URL+"/cgi-bin/media/uploadimg", pr)
		req.ContentLength = int64(len(body))
		resp, err := client.Do(req)
		if err != nil {
			slow <- result{}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		r := result{Status: resp.StatusCode, Body: b}
		_ = json.Unmarshal(b, &r.JSON)
		slow <- r
	}()
	for sent.Load() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	var bad atomic.Int32
	parallel(20, func(i int) {
		if r := get(t, g.URL+"/cgi-bin/user/info?i="+itoa(i)); r.Status != 200 || r.errcode() != 0 {
			bad.Add(1)
		}
	})
	if n := sent.Load(); n >= chunks {
		t.Errorf("the other requests finished only after the slow upload was sent (%d/%d chunks)", n, chunks)
	}
	if bad.Load() != 0 {
		t.Errorf("%d requests failed while a body trickled in", bad.Load())
	}
	r := <-slow
	sum := sha256.Sum256(body)
	if r.Status != 200 || r.JSON["body_sha256"] != hex.EncodeToString(sum[:]) {
		t.Errorf("slow upload: %d %s", r.Status, r.Body)
	}
}

// caddyLoad loads a config and returns the error instead of failing.
func caddyLoad(cfg []byte) error { return caddy.Load(cfg, true) }
