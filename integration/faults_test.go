package integration

// Upstream and token-endpoint faults through a real Caddy: what the
// client gets when WeChat hangs, breaks off or answers garbage.

import (
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
)

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
		// No wall-clock assert: tryGet's client timeout bounds a hang,
		// and each want checks what the gateway answered.
		status, body, err := tryGet(g.URL + path)
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
			a := onlyAccountRow(t, g)
			if !a.HasToken {
				t.Fatal("no token cached")
			}
			ttl := a.ExpiresAt.Sub(a.FetchedAt)
			if ttl <= 0 || ttl > 7200*time.Second {
				t.Errorf("cached for %s (expires_at %s), want within (0, 7200 s]", ttl, a.ExpiresAt)
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
			// No wall-clock assert: "deadline" in the answer shows that
			// fetch_timeout, not the client's timeout, ended the hang.
			r := get(t, g.URL+"/cgi-bin/user/info")
			// No WeChat errcode: -1, and 503 (README, "Fetch failures").
			if r.Status != http.StatusServiceUnavailable || r.errcode() != -1 {
				t.Errorf("status %d errcode %d, want 503 and -1: %s", r.Status, r.errcode(), r.Body)
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
