package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/fakewechat"
	"github.com/caddy-wechat/wechat/internal/gateway"
)

// Issue 10 attacks on the account's request path, through a real Caddy in
// front of the fake WeChat (with hooks for what the fake does not model
// yet). requestpath_component_test.go makes the same attacks on the open
// platform's transport.

// headerLog records the headers and path of every request the fake gets.
type headerLog struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (l *headerLog) hook(next func(w http.ResponseWriter, r *http.Request) bool) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		l.mu.Lock()
		l.reqs = append(l.reqs, r.Clone(r.Context()))
		l.mu.Unlock()
		return next != nil && next(w, r)
	}
}

func (l *headerLog) all() []*http.Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*http.Request(nil), l.reqs...)
}

// A call that carries the caller's own credential goes through untouched:
// no access_token is added, and a 40001 for it is neither replayed nor
// allowed to cost a fetch.
func TestOwnCredentialPassThrough(t *testing.T) {
	f, g := setup(t, "")
	waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second)
	var log headerLog
	f.setHook(log.hook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/component/") {
			return false
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, `{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest rid: c"}`)
		return true
	}))
	fetches := f.Fetches("stable")
	for _, q := range []string{"component_access_token=CAT", "a=1&COMPONENT_ACCESS_TOKEN=CAT", "suite%5Faccess_token=S", "provider_access_token=P&access_token=mine"} {
		before := len(log.all())
		r := do(t, http.MethodPost, g.URL+"/cgi-bin/component/api_query_auth?"+q, []byte(`{"component_appid":"x"}`))
		got := log.all()[before:]
		if r.errcode() != 40001 {
			t.Errorf("%s: client got %d %s, want WeChat's 40001", q, r.Status, r.Body)
		}
		if len(got) != 1 {
			t.Errorf("%s: upstream saw %d requests, want 1 (no replay)", q, len(got))
			continue
		}
		if got[0].URL.RawQuery != q {
			t.Errorf("query reached upstream as %q, want %q untouched", got[0].URL.RawQuery, q)
		}
	}
	if n := f.Fetches("stable"); n != fetches {
		t.Errorf("own-credential 40001s caused %d fetches", n-fetches)
	}
	if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
		t.Errorf("ordinary calls broken afterwards: %s", r.Body)
	}
}

// rid/get hands back the original request. Through the gateway it must
// not hand back our token (from an API call's rid) or the secret (from a
// failed stable_token fetch's rid).
func TestRidGetReadBack(t *testing.T) {
	f, g := setup(t, "")
	var mu sync.Mutex
	var lastTok string
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if tok := r.URL.Query().Get("access_token"); tok != "" {
			mu.Lock()
			lastTok = tok
			mu.Unlock()
		}
		if !strings.HasSuffix(r.URL.Path, "/rid/get") {
			return false
		}
		mu.Lock()
		tok := lastTok
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		// What WeChat answers: the token's query, and the stable_token body.
		io.WriteString(w, `{"errcode":0,"errmsg":"ok","request":{"invoke_time":1700000000,"cost_in_ms":7,`+
			`"request_url":"openid=nobody&access_token=`+tok+`",`+
			`"request_body":"{\"grant_type\":\"client_credential\",\"appid\":\"`+testAppID+`\",\"secret\":\"`+testSecret+`\"}",`+
			`"response_body":"{\"errcode\":40003,\"errmsg\":\"invalid openid\"}"}}`)
		return true
	})
	r := get(t, g.URL+"/cgi-bin/user/info?openid=nobody")
	mu.Lock()
	tok := lastTok
	mu.Unlock()
	if tok == "" {
		t.Fatalf("no token went upstream: %s", r.Body)
	}
	r = do(t, http.MethodPost, g.URL+"/cgi-bin/openapi/rid/get", []byte(`{"rid":"R"}`))
	for _, s := range []string{tok, testSecret} {
		if bytes.Contains(r.Body, []byte(s)) {
			t.Errorf("rid/get read back %.6s...: %s", s, r.Body)
		}
	}
	req, _ := r.JSON["request"].(map[string]any)
	if req == nil || req["invoke_time"] == nil || req["response_body"] == nil ||
		!strings.Contains(req["request_url"].(string), "openid=nobody&access_token="+gateway.RedactedMark) ||
		!strings.Contains(req["request_body"].(string), `"appid":"`+testAppID+`"`) {
		t.Errorf("rid/get lost its purpose: %s", r.Body)
	}
}

// The caller's Authorization, Proxy-Authorization and Cookie never reach
// WeChat, on API calls, login calls and user OAuth calls alike.
func TestCallerAuthStripped(t *testing.T) {
	for _, keep := range []bool{false, true} {
		extra := ""
		if keep {
			extra = "keep_caller_auth"
		}
		f, g := setup(t, extra)
		var log headerLog
		f.setHook(log.hook(nil))
		for _, p := range []string{"/cgi-bin/user/info", "/sns/jscode2session?js_code=c&grant_type=authorization_code", "/sns/userinfo?access_token=u&openid=o"} {
			do(t, http.MethodGet, g.URL+p, nil, "Authorization", "Basic c3ZjOnNlY3JldA==", "Proxy-Authorization", "Basic eA==", "Cookie", "sid=caller")
		}
		reqs := log.all()
		if len(reqs) < 3 {
			t.Fatalf("upstream saw %d requests", len(reqs))
		}
		for _, r := range reqs {
			for _, h := range gateway.CallerCredentialHeaders {
				// Proxy-Authorization is hop-by-hop: reverse_proxy drops it anyway.
				want := keep && h != "Proxy-Authorization"
				if got := r.Header.Get(h) != ""; got != want && r.URL.Path != "/cgi-bin/stable_token" {
					t.Errorf("keep=%v: %s %s reached upstream: %v", keep, r.URL.Path, h, got)
				}
			}
		}
		resetAccounts(t)
	}
}

// The path judged for the route is the path sent: a token-endpoint path
// that cleans to a login route is sent as the login route, not as is.
func TestCanonicalPathSent(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	var seen reqLog
	logAll(f, &seen, nil)
	g := startCaddy(t, basicConfig(f.URL, ""))
	gw := strings.TrimPrefix(g.URL, "http://")
	for raw, want := range map[string]string{
		"/cgi-bin/token%2f..%2f..%2fsns%2fjscode2session?js_code=c&grant_type=authorization_code": "/sns/jscode2session",
		"/cgi-bin/user%2finfo?openid=o":       "/cgi-bin/user/info",
		"/x/..%2f..%2fcgi-bin/./user//info":   "/cgi-bin/user/info",
		"/sns/x%2f..%2foauth2/access_token?c": "/sns/oauth2/access_token",
	} {
		before := len(seen.all())
		r := rawDo(gw, "GET "+raw+" HTTP/1.1\r\nHost: "+gw+"\r\n\r\n")
		got := seen.since(before)
		var sent []seenReq
		for _, s := range got {
			if s.Path != "/cgi-bin/stable_token" {
				sent = append(sent, s)
			}
		}
		if len(sent) != 1 {
			t.Errorf("%s: %d upstream requests (status %d)", raw, len(sent), r.Status)
			continue
		}
		uri, _, _ := strings.Cut(sent[0].URI, "?")
		if uri != want {
			t.Errorf("%s went upstream as %q, want %q", raw, sent[0].URI, want)
		}
		if strings.Contains(sent[0].RawQuery, "secret=") && want != "/sns/jscode2session" && want != "/sns/oauth2/access_token" {
			t.Errorf("%s: secret sent to %s", raw, sent[0].URI)
		}
	}
}

// Bodies buffer what arrives, not what is announced: 300 callers that
// announce 10 MiB and send one byte cost little heap, others are served
// meanwhile, and the idle bodies are cut off by body_read_timeout.
func TestAnnouncedBodiesDoNotReserve(t *testing.T) {
	const conns = 300
	_, g := setup(t, "body_read_timeout 3s")
	waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second)
	gw := strings.TrimPrefix(g.URL, "http://")
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)

	var open []net.Conn
	var closed atomic.Int32
	for range conns {
		c, err := net.Dial("tcp", gw)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		io.WriteString(c, "POST /cgi-bin/media/upload?type=image HTTP/1.1\r\nHost: "+gw+"\r\nContent-Length: 10485760\r\n\r\nx")
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
			io.Copy(io.Discard, c) // ends when the gateway gives up on the body
			closed.Add(1)
		}()
	}
	t.Cleanup(func() {
		for _, c := range open {
			c.Close()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for gateway.BufferedBytes() < conns*gateway.FirstBodyChunk && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	held := gateway.BufferedBytes()
	var bad atomic.Int32
	parallel(20, func(i int) {
		if r := get(t, g.URL+"/cgi-bin/user/info?i="+itoa(i)); r.errcode() != 0 {
			bad.Add(1)
		}
	})
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	t.Logf("%d bodies pending, %d KiB reserved; HeapInuse %d MiB (before: %d MiB)", conns, held>>10, m.HeapInuse>>20, base.HeapInuse>>20)
	if held < conns*gateway.FirstBodyChunk/2 {
		t.Errorf("only %d bytes reserved: the bodies were not being read", held)
	}
	if m.HeapInuse > 200<<20 {
		t.Errorf("HeapInuse %d MiB with %d announced 10 MiB bodies, want < 200 MiB", m.HeapInuse>>20, conns)
	}
	if bad.Load() != 0 {
		t.Errorf("%d other callers failed meanwhile", bad.Load())
	}
	for closed.Load() < conns && time.Now().Before(deadline.Add(30*time.Second)) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := closed.Load(); n < conns {
		t.Errorf("%d of %d idle bodies still open after body_read_timeout", conns-n, conns)
	}
	for gateway.BufferedBytes() != 0 && time.Now().Before(deadline.Add(40*time.Second)) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := gateway.BufferedBytes(); n != 0 {
		t.Errorf("%d bytes still reserved after the requests ended", n)
	}
}

// Past max_buffered_bytes a body streams through whole; it is never
// refused, and the reservation is given back.
func TestBufferCapStreams(t *testing.T) {
	_, g := setup(t, "max_buffered_bytes 64KiB")
	body := bytes.Repeat([]byte("0123456789"), 100<<10) // 1000 KiB
	sum := sha256.Sum256(body)
	parallel(4, func(int) {
		r := do(t, http.MethodPost, g.URL+"/cgi-bin/media/uploadimg", body)
		if r.Status != 200 || r.JSON["body_sha256"] != hex.EncodeToString(sum[:]) {
			t.Errorf("capped upload: %d %.200s", r.Status, r.Body)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for gateway.BufferedBytes() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := gateway.BufferedBytes(); n != 0 {
		t.Errorf("%d bytes still reserved", n)
	}
}

// ridIn finds the rid a client can read in an answer: in the errmsg, or in
// the fake's own caddy_wechat_fake field.
var ridRe = regexp.MustCompile(`rid(?:": ?"|: )([A-Za-z0-9_-]+)`)

func ridIn(t *testing.T, body []byte) string {
	t.Helper()
	m := ridRe.FindSubmatch(body)
	if m == nil {
		t.Fatalf("no rid in %s", body)
	}
	return string(m[1])
}

// The attack of issue 10 §1 against the fake's real rid/get: read the
// token back through the rid of an ordinary call.
func TestRidGetTokenReadBackFake(t *testing.T) {
	f, g := setup(t, "")
	r := get(t, g.URL+"/cgi-bin/user/info?openid=nobody")
	rid := ridIn(t, r.Body)
	tok := f.CurrentStable()
	if rec, ok := f.RecordOf(rid); !ok || !strings.Contains(rec.RawQuery, "access_token="+tok) {
		t.Fatalf("the fake kept no record with the token for rid %s: %+v", rid, rec)
	}
	a := do(t, http.MethodPost, g.URL+"/cgi-bin/openapi/rid/get", []byte(`{"rid":"`+rid+`"}`))
	if bytes.Contains(a.Body, []byte(tok)) || bytes.Contains(a.Body, []byte(testSecret)) {
		t.Fatalf("rid/get read a credential back: %s", a.Body)
	}
	req, _ := a.JSON["request"].(map[string]any)
	if a.errcode() != 0 || req == nil || req["invoke_time"] == nil ||
		!strings.Contains(req["request_url"].(string), "openid=nobody") || !strings.Contains(req["request_url"].(string), "access_token="+gateway.RedactedMark) {
		t.Errorf("rid/get lost its purpose: %s", a.Body)
	}
}

// A failed token fetch's errmsg ends with the rid of the stable_token
// call, whose body holds the secret. The client's error must not carry
// that rid, and rid/get of it (had a caller learned it some other way)
// must not give the secret back.
func TestRidGetSecretReadBackFake(t *testing.T) {
	f, g := setup(t, "")
	f.FailTokens(40164, "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist")
	r := get(t, g.URL+"/cgi-bin/user/info")
	if r.errcode() != 40164 {
		t.Fatalf("want 40164 from the failing fetch, got %s", r.Body)
	}
	if strings.Contains(string(r.Body), "rid") {
		t.Errorf("the client's error carries the token fetch's rid: %s", r.Body)
	}
	recs := f.Records("/cgi-bin/stable_token")
	if len(recs) == 0 {
		t.Fatal("the fake recorded no stable_token call")
	}
	rid := recs[len(recs)-1].RID
	if rec, ok := f.RecordOf(rid); !ok || !strings.Contains(rec.Body, testSecret) {
		t.Fatalf("rid %s is not the stable_token fetch with the secret: %+v", rid, rec)
	}
	f.FailTokens(0, "")
	waitOK(t, g.URL+"/cgi-bin/user/info", 20*time.Second) // after the backoff
	a := do(t, http.MethodPost, g.URL+"/cgi-bin/openapi/rid/get", []byte(`{"rid":"`+rid+`"}`))
	if bytes.Contains(a.Body, []byte(testSecret)) || bytes.Contains(a.Body, []byte(f.CurrentStable())) {
		t.Fatalf("rid/get read a credential back: %s", a.Body)
	}
	req, _ := a.JSON["request"].(map[string]any)
	if a.errcode() != 0 || req == nil || !strings.Contains(req["request_body"].(string), testAppID) ||
		!strings.Contains(req["request_body"].(string), gateway.RedactedMark) {
		t.Errorf("rid/get lost its purpose: %s", a.Body)
	}
}

// The fake's own header report: no Authorization or Cookie arrives.
func TestCallerAuthStrippedFake(t *testing.T) {
	f, g := setup(t, "")
	for _, p := range []string{"/cgi-bin/user/info", "/sns/jscode2session?js_code=c&grant_type=authorization_code", "/cgi-bin/openapi/rid/get"} {
		do(t, http.MethodPost, g.URL+p, []byte(`{"rid":"x"}`), "Authorization", "Basic c3ZjOnNlY3JldA==", "Cookie", "sid=caller")
	}
	if h := f.Headers(); h.Authorization != 0 || h.Cookie != 0 {
		t.Errorf("the fake saw caller credentials: %+v", h)
	}
}

// The fake's always-40001 API, called with the caller's own credential:
// one call upstream, our token absent, no fetch.
func TestOwnCredentialAlways40001Fake(t *testing.T) {
	f, g := setup(t, "")
	waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second)
	fetches := f.Fetches("stable")
	for range 20 {
		if r := get(t, g.URL+fakewechat.AlwaysInvalidPath+"?component_access_token=CAT"); r.errcode() != 40001 {
			t.Fatalf("want 40001 passed on, got %s", r.Body)
		}
	}
	if n := f.Fetches("always_40001"); n != 20 {
		t.Errorf("upstream got %d calls for 20 (a replay?)", n)
	}
	for _, rec := range f.Records(fakewechat.AlwaysInvalidPath) {
		if strings.Contains(strings.ToLower(rec.RawQuery), "&access_token") || strings.HasPrefix(rec.RawQuery, "access_token") {
			t.Errorf("our token went with a caller's own credential: %q", rec.RawQuery)
		}
	}
	if n := f.Fetches("stable"); n != fetches {
		t.Errorf("%d fetches caused by own-credential 40001s", n-fetches)
	}
}
