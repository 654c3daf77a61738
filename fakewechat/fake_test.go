package fakewechat

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock shared by the fake and the test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type env struct {
	t   *testing.T
	fw  *Server
	hs  *httptest.Server
	clk *clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clk := &clock{t: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
	fw := New(Options{
		AppID: "wxAPP", Secret: "SECRET",
		CorpID: "wwCORP", CorpSecrets: map[string]string{"app1": "CS1", "app2": "CS2"},
		Now: clk.Now,
	})
	hs := httptest.NewServer(fw)
	t.Cleanup(hs.Close)
	return &env{t, fw, hs, clk}
}

// resp is a decoded answer plus the headers the test checks.
type resp struct {
	status int
	hdr    http.Header
	body   []byte
	m      map[string]any
}

func (r resp) code() int {
	if v, ok := r.m["errcode"].(float64); ok {
		return int(v)
	}
	return 0
}

func (r resp) str(k string) string { s, _ := r.m[k].(string); return s }

func (e *env) do(method, path, body string) resp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.hs.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := e.hs.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	out := resp{status: res.StatusCode, hdr: res.Header, body: b}
	_ = json.Unmarshal(b, &out.m)
	return out
}

func (e *env) classic() string {
	e.t.Helper()
	r := e.do("GET", "/cgi-bin/token?grant_type=client_credential&appid=wxAPP&secret=SECRET", "")
	if r.code() != 0 || r.str("access_token") == "" {
		e.t.Fatalf("classic fetch: %s", r.body)
	}
	return r.str("access_token")
}

func (e *env) stable(force bool) resp {
	e.t.Helper()
	b, _ := json.Marshal(stableRequest{"client_credential", "wxAPP", "SECRET", force})
	return e.do("POST", "/cgi-bin/stable_token", string(b))
}

func (e *env) call(tok string) int {
	e.t.Helper()
	return e.do("GET", "/cgi-bin/user/info?openid=o1&access_token="+url.QueryEscape(tok), "").code()
}

func wantCode(t *testing.T, what string, got, want int) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: errcode %d, want %d", what, got, want)
	}
}

func TestClassicRotationWithOverlap(t *testing.T) {
	e := newEnv(t)
	t1 := e.classic()
	if !strings.HasPrefix(t1, "CLS_") || len(t1) < 32 {
		t.Fatalf("token %q: want CLS_ prefix and 32+ chars", t1)
	}
	wantCode(t, "t1", e.call(t1), 0)
	t2 := e.classic()
	if t2 == t1 {
		t.Fatal("classic fetch returned the same token")
	}
	e.clk.Add(4 * time.Minute)
	wantCode(t, "t1 in overlap", e.call(t1), 0)
	e.clk.Add(time.Minute)
	wantCode(t, "t1 after overlap", e.call(t1), 40001)
	wantCode(t, "t2", e.call(t2), 0)
	e.clk.Add(7200 * time.Second)
	wantCode(t, "t2 expired", e.call(t2), 42001)

	wantCode(t, "bad appid", e.do("GET", "/cgi-bin/token?grant_type=client_credential&appid=x&secret=SECRET", "").code(), 40013)
	wantCode(t, "bad secret", e.do("GET", "/cgi-bin/token?grant_type=client_credential&appid=wxAPP&secret=x", "").code(), 40125)
	wantCode(t, "no grant", e.do("GET", "/cgi-bin/token?appid=wxAPP&secret=SECRET", "").code(), 40002)
	if n := e.fw.Fetches("classic"); n != 5 {
		t.Fatalf("Fetches(classic) = %d, want 5", n)
	}
	if n := e.fw.Rejected(40001); n != 1 {
		t.Fatalf("Rejected(40001) = %d, want 1", n)
	}
}

func TestStableSameTokenThenRenew(t *testing.T) {
	e := newEnv(t)
	r := e.stable(false)
	s1 := r.str("access_token")
	if !strings.HasPrefix(s1, "STB_") || r.m["expires_in"].(float64) != 7200 {
		t.Fatalf("first stable: %s", r.body)
	}
	e.clk.Add(100 * time.Second)
	r = e.stable(false)
	if r.str("access_token") != s1 || r.m["expires_in"].(float64) != 7100 {
		t.Fatalf("second stable: %s, want same token, expires_in 7100", r.body)
	}
	c := e.classic() // classic and stable do not affect each other
	wantCode(t, "stable after classic", e.call(s1), 0)
	e.clk.Add(7200*time.Second - 100*time.Second - 5*time.Minute)
	s2 := e.stable(false).str("access_token")
	if s2 == s1 || s2 != e.fw.CurrentStable() {
		t.Fatalf("in the renew window: got %q, want a new current token", s2)
	}
	wantCode(t, "old stable until its expiry", e.call(s1), 0)
	wantCode(t, "classic still valid", e.call(c), 0)
	e.clk.Add(5 * time.Minute)
	wantCode(t, "old stable expired", e.call(s1), 42001)
	wantCode(t, "new stable", e.call(s2), 0)
}

func TestStableForceRefreshLimits(t *testing.T) {
	e := newEnv(t)
	s1 := e.stable(false).str("access_token")
	s2 := e.stable(true).str("access_token")
	if s2 == "" || s2 == s1 {
		t.Fatal("force_refresh did not issue a new token")
	}
	wantCode(t, "forced-out token", e.call(s1), 40001)
	wantCode(t, "force again at once", e.stable(true).code(), 45011)
	wantCode(t, "normal fetch still fine", e.stable(false).code(), 0)
	for i := 1; i < 20; i++ {
		e.clk.Add(31 * time.Second)
		wantCode(t, "force within the daily quota", e.stable(true).code(), 0)
	}
	e.clk.Add(31 * time.Second)
	wantCode(t, "21st force today", e.stable(true).code(), 45009)
	e.clk.Add(24 * time.Hour)
	wantCode(t, "force next day", e.stable(true).code(), 0)

	wantCode(t, "bad JSON", e.do("POST", "/cgi-bin/stable_token", "{nope").code(), 47001)
	wantCode(t, "bad grant", e.do("POST", "/cgi-bin/stable_token", `{"appid":"wxAPP","secret":"SECRET"}`).code(), 40002)
	if f, a := e.fw.Fetches("stable_force"), e.fw.Fetches("stable"); f != 23 || a != 27 {
		t.Fatalf("Fetches stable_force=%d stable=%d, want 23 and 27", f, a)
	}
}

func TestAPITokenErrors(t *testing.T) {
	e := newEnv(t)
	tok := e.classic()
	r := e.do("GET", "/cgi-bin/menu/get", "")
	wantCode(t, "missing", r.code(), 41001)
	if ct := r.hdr.Get("Content-Type"); ct != "text/plain" || r.status != 200 {
		t.Fatalf("error answered %d %q, want 200 text/plain", r.status, ct)
	}
	if !strings.Contains(r.str("errmsg"), " rid: ") {
		t.Fatalf("errmsg %q has no rid", r.str("errmsg"))
	}
	wantCode(t, "unknown", e.call("CLS_nope"), 40001)
	wantCode(t, "unknown WeCom", e.call("WRK_nope"), 40014)
	dup := e.do("GET", "/cgi-bin/menu/get?access_token="+tok+"&access_token="+tok, "")
	wantCode(t, "two access_token", dup.code(), 40001)
	if got := e.fw.LastAPIQuery()["access_token"]; len(got) != 2 {
		t.Fatalf("LastAPIQuery access_token = %v, want 2 values", got)
	}
	wantCode(t, "good", e.call(tok), 0)
	if e.fw.APICalls() != 1 || e.fw.Rejected(41001) != 1 || e.fw.Rejected(40001) != 2 || e.fw.Rejected(40014) != 1 {
		t.Fatalf("counters: calls=%d 41001=%d 40001=%d 40014=%d", e.fw.APICalls(),
			e.fw.Rejected(41001), e.fw.Rejected(40001), e.fw.Rejected(40014))
	}
	e.fw.Reset()
	if e.fw.APICalls() != 0 || e.fw.Fetches("classic") != 0 || e.fw.Rejected(40001) != 0 {
		t.Fatal("Reset did not zero the counters")
	}
	wantCode(t, "token survives Reset", e.call(tok), 0)
}

func TestEcho(t *testing.T) {
	e := newEnv(t)
	tok := e.classic()
	body := `{"touser":"o1","msgtype":"text"}`
	r := e.do("POST", "/cgi-bin/message/custom/send?b=2&access_token="+tok+"&a=1", body)
	sum := sha256.Sum256([]byte(body))
	if r.code() != 0 || r.str("method") != "POST" || r.str("path") != "/cgi-bin/message/custom/send" ||
		r.str("query") != "a=1&b=2" || r.m["body_len"].(float64) != float64(len(body)) ||
		r.str("body_sha256") != hex.EncodeToString(sum[:]) || r.str("content_type") != "application/json" ||
		r.str("host") == "" {
		t.Fatalf("echo: %s", r.body)
	}
	if ct := r.hdr.Get("Content-Type"); ct != "application/json; encoding=utf-8" {
		t.Fatalf("success Content-Type %q", ct)
	}
	if q := e.fw.LastAPIQuery(); len(q["access_token"]) != 1 || q.Get("a") != "1" {
		t.Fatalf("LastAPIQuery = %v", q)
	}
}

func TestRevokeAndExpireAll(t *testing.T) {
	e := newEnv(t)
	c, s := e.classic(), e.stable(false).str("access_token")
	w := e.do("GET", "/cgi-bin/gettoken?corpid=wwCORP&corpsecret=CS1", "").str("access_token")
	e.fw.RevokeAll()
	wantCode(t, "revoked classic", e.call(c), 40001)
	wantCode(t, "revoked stable", e.call(s), 40001)
	wantCode(t, "revoked WeCom", e.call(w), 40014)
	s2 := e.stable(false).str("access_token")
	if s2 == s || !e.fw.ValidToken(s2) {
		t.Fatal("stable normal fetch after RevokeAll must issue a new token")
	}
	w2 := e.do("GET", "/cgi-bin/gettoken?corpid=wwCORP&corpsecret=CS1", "").str("access_token")
	if w2 == w || !e.fw.ValidToken(w2) {
		t.Fatal("WeCom fetch after RevokeAll must issue a new token")
	}
	e.fw.ExpireAll()
	wantCode(t, "expired stable", e.call(s2), 42001)
	wantCode(t, "expired WeCom", e.call(w2), 42001)
	if e.fw.ValidToken(s2) || e.stable(false).str("access_token") == s2 {
		t.Fatal("stable fetch after ExpireAll must issue a new token")
	}
}

func TestFailureInjection(t *testing.T) {
	e := newEnv(t)
	e.fw.FailTokens(40164, "")
	r := e.do("GET", "/cgi-bin/token?grant_type=client_credential&appid=wxAPP&secret=SECRET", "")
	if r.code() != 40164 || !strings.Contains(r.str("errmsg"), "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist rid: ") {
		t.Fatalf("40164: %s", r.body)
	}
	wantCode(t, "stable while failing", e.stable(false).code(), 40164)
	e.fw.FailTokens(0, "")
	tok := e.classic()

	e.fw.SetTokenDown(502)
	r = e.stable(false)
	if r.status != 502 || !strings.HasPrefix(r.hdr.Get("Content-Type"), "text/html") {
		t.Fatalf("down: %d %q", r.status, r.hdr.Get("Content-Type"))
	}
	wantCode(t, "API calls unaffected", e.call(tok), 0)
	e.fw.SetTokenDown(0)

	e.fw.SetTokenResponse(`{"access_token":"","expires_in":0}`)
	if r = e.stable(false); string(r.body) != `{"access_token":"","expires_in":0}` {
		t.Fatalf("raw: %s", r.body)
	}
	e.fw.SetTokenResponse("")

	e.fw.SetTokenDelay(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.hs.URL+"/cgi-bin/token", nil)
	if _, err := e.hs.Client().Do(req); err == nil {
		t.Fatal("delayed fetch answered before the client gave up")
	}
	e.fw.SetTokenDelay(0)
	if e.stable(false).str("access_token") == "" {
		t.Fatal("stable after clearing all failures")
	}
	if n := e.fw.Fetches("classic"); n != 3 {
		t.Fatalf("Fetches(classic) = %d, want 3 (failed fetches count)", n)
	}
}

func TestConcurrent(t *testing.T) {
	e := newEnv(t)
	tok := e.stable(false).str("access_token")
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if i%4 == 0 {
				e.fw.SetGzip(i%8 == 0)
				e.stable(false)
				e.classic()
			}
			for range 10 {
				e.call(tok)
			}
			e.fw.Fetches("stable")
		})
	}
	wg.Wait()
	if e.fw.APICalls() != 160 {
		t.Fatalf("APICalls = %d, want 160", e.fw.APICalls())
	}
}

// SetTokenTTL shortens the life of tokens issued from then on, and only
// theirs: the soak relies on it for natural expiry within a minute.
func TestSetTokenTTL(t *testing.T) {
	e := newEnv(t)
	s1 := e.stable(false).str("access_token")
	e.fw.SetTokenTTL(30 * time.Second)
	r := e.stable(false)
	if r.str("access_token") != s1 || r.m["expires_in"].(float64) != 7200 {
		t.Fatalf("a token issued before keeps its life: %s", r.body)
	}
	e.fw.ExpireAll()
	r = e.stable(false)
	s2 := r.str("access_token")
	if s2 == s1 || r.m["expires_in"].(float64) != 30 {
		t.Fatalf("stable after SetTokenTTL(30s): %s, want a new token with expires_in 30", r.body)
	}
	if r := e.do("GET", "/cgi-bin/token?grant_type=client_credential&appid=wxAPP&secret=SECRET", ""); r.m["expires_in"].(float64) != 30 {
		t.Fatalf("classic after SetTokenTTL(30s): %s", r.body)
	}
	e.clk.Add(29 * time.Second)
	wantCode(t, "short token before its end", e.call(s2), 0)
	e.clk.Add(time.Second)
	wantCode(t, "short token at its end", e.call(s2), 42001)
	e.fw.SetTokenTTL(0)
	if r := e.do("GET", "/cgi-bin/token?grant_type=client_credential&appid=wxAPP&secret=SECRET", ""); r.m["expires_in"].(float64) != 7200 {
		t.Fatalf("SetTokenTTL(0) must restore Options.TokenTTL: %s", r.body)
	}
}
