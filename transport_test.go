package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/caddykit"
	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/caddyserver/caddy/v2"
	dto "github.com/prometheus/client_model/go"
)

// The limits' defaults apply to a zero setting only; a set value wins.
func TestRequestBodyLimitDefaults(t *testing.T) {
	var zero Transport
	if got := zero.maxBuffered(); got != gateway.DefaultMaxBuffered {
		t.Errorf("maxBuffered() = %d, want the default %d", got, gateway.DefaultMaxBuffered)
	}
	if got := zero.bodyReadTimeout(); got != gateway.DefaultBodyReadTimeout {
		t.Errorf("bodyReadTimeout() = %v, want the default %v", got, gateway.DefaultBodyReadTimeout)
	}
	if got := zero.maxReplay(); got != caddykit.DefaultMaxReplayBody {
		t.Errorf("maxReplay() = %d, want the default %d", got, caddykit.DefaultMaxReplayBody)
	}
	set := Transport{MaxBufferedBytes: 1, BodyReadTimeout: caddy.Duration(time.Nanosecond), MaxReplayBody: 1}
	if got := set.maxBuffered(); got != 1 {
		t.Errorf("maxBuffered() = %d, want the configured 1", got)
	}
	if got := set.bodyReadTimeout(); got != time.Nanosecond {
		t.Errorf("bodyReadTimeout() = %v, want the configured 1ns", got)
	}
	if got := set.maxReplay(); got != 1 {
		t.Errorf("maxReplay() = %d, want the configured 1", got)
	}
}

// The account host's needles are cached until the current token or the ring changes, and the
// set includes the secret and every token the ring sent.
func TestNeedlesCache(t *testing.T) {
	const secret = "secret-secret-secret"
	tr := &Transport{secret: secret, sent: new(gateway.TokenRing), needleCache: new(atomic.Pointer[gateway.Needles])}
	a := (*accountHost)(tr).Needles("")
	if !slices.Contains(a.Values(), secret) {
		t.Fatalf("needles %q miss the secret", a.Values())
	}
	if b := (*accountHost)(tr).Needles(""); b != a {
		t.Errorf("unchanged ring: needles rebuilt")
	}
	e := &credential.Token{Value: "sent-token-sent-token"}
	tr.sent.Note(e)
	c := (*accountHost)(tr).Needles("")
	if c == a || !slices.Contains(c.Values(), e.Value) || !slices.Contains(c.Values(), secret) {
		t.Errorf("after a token was sent: same set %v, needles %q", c == a, c.Values())
	}
	if d := (*accountHost)(tr).Needles(""); d != c {
		t.Errorf("unchanged again: needles rebuilt")
	}
	// Without a cache, a fresh set each time, still complete.
	bare := &Transport{secret: secret}
	if x, y := (*accountHost)(bare).Needles(""), (*accountHost)(bare).Needles(""); x == y || !slices.Contains(x.Values(), secret) {
		t.Errorf("no cache: same set %v, needles %q", x == y, x.Values())
	}
}

// unitTransport provisions a Transport against upstream with no Caddy
// server running, and calls it directly: these tests cover the request
// path in milliseconds, so that the mutation run (scripts/mutate.sh) can run
// them once per mutant.
func unitTransport(t testing.TB, upstreams []string, tweak func(*Transport)) *Transport {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	tr := &Transport{Account: Account{AppID: testAppID, Secret: testSecret, TokenAPI: tokenAPIClassic, TokenEndpoints: upstreams}}
	if tweak != nil {
		tweak(tr)
	}
	if err := tr.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Cleanup() })
	return tr
}

// roundTrip sends one request through tr as reverse_proxy would, and
// returns the status, errcode, X-Wechat-Gateway and body.
type unitResult struct {
	status       int
	errcode      int
	runningCaddy string
	body         string
}

func unitDo(t testing.TB, tr *Transport, method, target string, body string) (unitResult, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	// The request ends with unitDo, as Caddy ends one: its body
	// reservation is given back (bufferedBytes is process-wide).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return unitResult{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := unitResult{status: resp.StatusCode, runningCaddy: resp.Header.Get("X-Wechat-Gateway"), body: string(b)}
	var e struct {
		Errcode int `json:"errcode"`
	}
	_ = json.Unmarshal(b, &e)
	r.errcode = e.Errcode
	return r, nil
}

func mustDo(t testing.TB, tr *Transport, method, target, body string) unitResult {
	t.Helper()
	r, err := unitDo(t, tr, method, target, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	return r
}

func retries(tr *Transport, outcome string) float64 {
	var m dto.Metric
	_ = tr.metrics.retries[outcome].Write(&m)
	return m.GetCounter().GetValue()
}

func TestUnitTokenAddedAndReplayOnce(t *testing.T) {
	f := newFake(t)
	tr := unitTransport(t, []string{f.URL}, nil)
	r := mustDo(t, tr, http.MethodPost, f.URL+"/cgi-bin/message/custom/send", `{"touser":"x"}`)
	if r.status != 200 || r.errcode != 0 || r.runningCaddy != "" {
		t.Fatalf("first call: %+v", r)
	}
	tok := tr.acct.tokens.Current()
	if got := f.LastAPIQuery().Get("access_token"); got != tok.Value {
		t.Fatalf("sent token %q, cached %q", got, tok.Value)
	}
	// WeChat rejects the token: the engine probes it, fetches a new one,
	// and the request is replayed once with the same body.
	f.rejectToken(tok.Value)
	ok := retries(tr, "ok")
	r = mustDo(t, tr, http.MethodPost, f.URL+"/cgi-bin/message/custom/send", `{"touser":"x"}`)
	if r.errcode != 0 || f.Fetches("classic") != 2 || retries(tr, "ok")-ok != 1 {
		t.Fatalf("after a rejected token: %+v, %d fetches, %v ok replays", r, f.Fetches("classic"), retries(tr, "ok")-ok)
	}
	if cur := tr.acct.tokens.Current(); cur == nil || cur.Value == tok.Value || f.LastAPIQuery().Get("access_token") != cur.Value {
		t.Fatal("the replay did not use the new token")
	}
}

// A rejected token behind a body too large to replay: the client gets
// WeChat's answer, not replayed, but the evidence still reaches the
// engine, which replaces the token for the next request (README,
// "Bodies"). A stream of large uploads alone must not keep a dead token.
func TestUnitNotReplayableStillReplacesToken(t *testing.T) {
	f := newFake(t)
	tr := unitTransport(t, []string{f.URL}, func(tr *Transport) { tr.MaxReplayBody = 16 })
	mustDo(t, tr, http.MethodGet, f.URL+"/cgi-bin/user/info?openid=o1", "")
	tok := tr.acct.tokens.Current()
	f.rejectToken(tok.Value)
	calls, nr, ok := f.APICalls(), retries(tr, "not_replayable"), retries(tr, "ok")
	big := `{"touser":"` + strings.Repeat("x", 64) + `"}`
	r := mustDo(t, tr, http.MethodPost, f.URL+"/cgi-bin/message/custom/send", big)
	if r.errcode != 40001 || r.runningCaddy != "" {
		t.Fatalf("not replayable: want WeChat's own 40001, got %+v", r)
	}
	if retries(tr, "not_replayable")-nr != 1 || retries(tr, "ok") != ok {
		t.Fatalf("retries: not_replayable +%v, ok +%v", retries(tr, "not_replayable")-nr, retries(tr, "ok")-ok)
	}
	// One API call and one probe, no replay.
	if n := f.APICalls() - calls; n > 2 {
		t.Fatalf("%d calls reached WeChat; want the request and the probe only", n)
	}
	cur := tr.acct.tokens.Current()
	if cur == nil || cur.Value == tok.Value {
		t.Fatal("the rejected token is still cached after a non-replayable request")
	}
	if f.Fetches("classic") != 2 {
		t.Fatalf("%d fetches; want 2", f.Fetches("classic"))
	}
	r = mustDo(t, tr, http.MethodPost, f.URL+"/cgi-bin/message/custom/send", big)
	if r.errcode != 0 {
		t.Fatalf("next request: %+v", r)
	}
}

// The documented mapping of a failed token fetch: 503 while backing off,
// on -1, 45009, 45011 and on a timeout; 502 otherwise. Always WeChat's
// JSON shape with the errcode, and X-Wechat-Gateway: error (plain
// reverse_proxy would answer 502 too).
func TestUnitTokenUnavailableStatus(t *testing.T) {
	for _, c := range []struct {
		code, status int
	}{{40164, 502}, {40013, 502}, {-1, 503}, {45009, 503}, {45011, 503}} {
		t.Run(fmt.Sprint(c.code), func(t *testing.T) {
			f := newFake(t)
			f.FailTokens(c.code, "no")
			tr := unitTransport(t, []string{f.URL}, nil)
			r := mustDo(t, tr, http.MethodGet, f.URL+"/cgi-bin/user/info?openid=o1", "")
			if r.status != c.status || r.errcode != c.code || r.runningCaddy != "error" {
				t.Fatalf("got %d errcode %d gateway %q; want %d errcode %d gateway error: %s", r.status, r.errcode, r.runningCaddy, c.status, c.code, r.body)
			}
			// The next request finds the cache backing off: 503, with
			// the errcode of the failure.
			r = mustDo(t, tr, http.MethodGet, f.URL+"/cgi-bin/user/info?openid=o1", "")
			if r.status != 503 || r.errcode != c.code || r.runningCaddy != "error" || !strings.Contains(r.body, "next attempt in") {
				t.Fatalf("backing off: got %d errcode %d gateway %q: %s", r.status, r.errcode, r.runningCaddy, r.body)
			}
			if f.Fetches("classic") != 1 {
				t.Fatalf("%d fetches while backing off", f.Fetches("classic"))
			}
		})
	}
}

// A token endpoint that never answers: 503 with errcode -1 once the
// fetch deadline passes (asserted on the answer, not on the time).
func TestUnitTokenTimeout503(t *testing.T) {
	f := newFake(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/cgi-bin/token" {
			return false
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return true
	})
	tr := unitTransport(t, []string{f.URL}, func(tr *Transport) { tr.FetchTimeout = caddy.Duration(50 * time.Millisecond) })
	r := mustDo(t, tr, http.MethodGet, f.URL+"/cgi-bin/user/info?openid=o1", "")
	if r.status != 503 || r.errcode != -1 || r.runningCaddy != "error" {
		t.Fatalf("timeout: got %d errcode %d gateway %q: %s", r.status, r.errcode, r.runningCaddy, r.body)
	}
}

// A transport error that quotes the URL (here a proxy function's) loses
// the token before it reaches reverse_proxy and its logs; a token fetch's
// loses the secret before it reaches the client.
func TestUnitTransportErrorRedacted(t *testing.T) {
	f := newFake(t)
	tr := unitTransport(t, []string{f.URL}, nil)
	failAPI := true
	tr.HTTPTransport.Transport.Proxy = func(r *http.Request) (*url.URL, error) {
		if r.URL.Path == "/cgi-bin/token" || !failAPI {
			return nil, nil
		}
		return nil, errors.New("no proxy for " + r.URL.String())
	}
	_, err := unitDo(t, tr, http.MethodGet, f.URL+"/cgi-bin/user/info?openid=o1", "")
	tok := tr.acct.tokens.Current()
	if err == nil || tok == nil {
		t.Fatalf("want a transport error after a fetch: %v", err)
	}
	if strings.Contains(err.Error(), tok.Value) || !strings.Contains(err.Error(), "no proxy for") {
		t.Fatalf("transport error not redacted (or not the proxy's): %v", err)
	}

	// The token fetch itself fails with the URL, secret included.
	f2 := newFake(t)
	tr2 := unitTransport(t, []string{f2.URL}, nil)
	tr2.HTTPTransport.Transport.Proxy = func(r *http.Request) (*url.URL, error) {
		return nil, errors.New("no proxy for " + r.URL.String())
	}
	r := mustDo(t, tr2, http.MethodGet, f2.URL+"/cgi-bin/user/info?openid=o1", "")
	if r.runningCaddy != "error" || strings.Contains(r.body, testSecret) {
		t.Fatalf("fetch error: %+v", r)
	}
}

// A WeChat errcode from the first token endpoint is an answer about the
// account, not about the endpoint: no failover to the next one.
func TestUnitNoFailoverOnErrcode(t *testing.T) {
	f1, f2 := newFake(t), newFake(t)
	f1.FailTokens(40164, "invalid ip")
	tr := unitTransport(t, []string{f1.URL, f2.URL}, nil)
	r := mustDo(t, tr, http.MethodGet, f1.URL+"/cgi-bin/user/info?openid=o1", "")
	if r.errcode != 40164 || r.status != 502 || r.runningCaddy != "error" {
		t.Fatalf("got %+v", r)
	}
	if f2.Fetches("classic") != 0 {
		t.Fatalf("the fetch failed over to the second endpoint on an errcode")
	}
	// A dead first endpoint does fail over.
	f3 := newFake(t)
	f3.srv.Close()
	tr = unitTransport(t, []string{f3.URL, f2.URL}, nil)
	r = mustDo(t, tr, http.MethodGet, f2.URL+"/cgi-bin/user/info?openid=o1", "")
	if r.errcode != 0 || f2.Fetches("classic") != 1 {
		t.Fatalf("no failover from a dead endpoint: %+v", r)
	}
}

// These tests pin RoundTrip's branches (transport.go) one by one against
// the in-process fake, with no Caddy server, so that the mutation run
// (scripts/mutate.sh) checks them: which body goes upstream, which result each
// answer counts as, and the answers the gateway gives itself.

func requests(tr *Transport, result string) float64 {
	var m dto.Metric
	_ = tr.metrics.requests[result].Write(&m)
	return m.GetCounter().GetValue()
}

// counted runs fn and reports which request results it counted, and how
// many times each.
func counted(tr *Transport, fn func()) map[string]float64 {
	before := map[string]float64{}
	for _, r := range requestResults {
		before[r] = requests(tr, r)
	}
	fn()
	got := map[string]float64{}
	for _, r := range requestResults {
		if d := requests(tr, r) - before[r]; d != 0 {
			got[r] = d
		}
	}
	return got
}

func only(got map[string]float64, result string) bool {
	return len(got) == 1 && got[result] == 1
}

// upstreamLog records what reached the fake's API (not its token
// endpoints): the request line's protocol and target, body,
// Content-Length and Transfer-Encoding of each call.
type upstreamLog struct {
	mu    sync.Mutex
	calls []upstreamCall
}

type upstreamCall struct {
	target  string // "HTTP/1.1 /cgi-bin/...?...": Proto and RequestURI
	body    []byte
	length  int64
	chunked bool
}

func (l *upstreamLog) hook(answer func(w http.ResponseWriter, r *http.Request) bool) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/cgi-bin/token" || r.URL.Path == "/cgi-bin/stable_token" {
			return false
		}
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b)) // the fake may answer from it
		l.mu.Lock()
		l.calls = append(l.calls, upstreamCall{target: r.Proto + " " + r.RequestURI, body: b, length: r.ContentLength, chunked: len(r.TransferEncoding) > 0})
		l.mu.Unlock()
		if answer != nil {
			return answer(w, r)
		}
		return false
	}
}

func (l *upstreamLog) last(t *testing.T) upstreamCall {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.calls) == 0 {
		t.Fatal("nothing reached the upstream API")
	}
	return l.calls[len(l.calls)-1]
}

// Whatever the body (none, buffered for replay, too large to replay, of
// unknown length), WeChat gets exactly the client's bytes with the right
// length.
func TestUnitBodyReachesUpstream(t *testing.T) {
	f := newFake(t)
	var log upstreamLog
	f.setHook(log.hook(nil))
	tr := unitTransport(t, []string{f.URL}, func(tr *Transport) { tr.MaxReplayBody = 16 })
	for _, tc := range []struct {
		name    string
		body    string
		length  int64 // -1: unknown
		chunked bool
	}{
		{"none", "", 0, false},
		{"replayable", `{"a":1}`, 7, false},
		{"too large to replay", `{"touser":"` + strings.Repeat("x", 40) + `"}`, 53, false},
		{"unknown length, replayable", `{"a":2}`, -1, false},
		{"unknown length, too large", `{"touser":"` + strings.Repeat("y", 40) + `"}`, -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = io.MultiReader(strings.NewReader(tc.body)) // hides the length from NewRequest
			}
			req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, f.URL+"/cgi-bin/message/custom/send", body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tc.length
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			c := log.last(t)
			if string(c.body) != tc.body {
				t.Fatalf("upstream got body %q, want %q", c.body, tc.body)
			}
			wantLen := int64(len(tc.body))
			if tc.chunked {
				wantLen = -1
			}
			if c.length != wantLen || c.chunked != tc.chunked {
				t.Errorf("upstream got length %d (chunked %v), want %d (chunked %v)", c.length, c.chunked, wantLen, tc.chunked)
			}
		})
	}
}

// Each answer counts once, as what it is: WeChat's success, WeChat's
// error, an upstream 5xx (from 500 on) on the routes that pass through.
func TestUnitRequestResults(t *testing.T) {
	f := newFake(t)
	status, answer := 200, `{"errcode":0,"errmsg":"ok"}`
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/cgi-bin/token" {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
		return true
	})
	tr := unitTransport(t, []string{f.URL}, nil)
	for _, tc := range []struct {
		path, answer string
		status       int
		result       string
	}{
		{"/cgi-bin/user/info", `{"errcode":0,"errmsg":"ok"}`, 200, "ok"},
		{"/cgi-bin/user/info", `{"errcode":45009,"errmsg":"limit"}`, 200, "wechat_error"},
		{"/cgi-bin/user/info", `{"errcode":-1,"errmsg":"busy"}`, 200, "wechat_error"},
		{"/sns/userinfo", `{"openid":"o"}`, 200, "ok"},
		{"/sns/userinfo", `{"errcode":40003}`, 499, "ok"},
		{"/sns/userinfo", `oops`, 500, "upstream_5xx"},
		{"/sns/jscode2session", `oops`, 503, "upstream_5xx"},
	} {
		status, answer = tc.status, tc.answer
		var r unitResult
		got := counted(tr, func() { r = mustDo(t, tr, http.MethodGet, f.URL+tc.path+"?openid=o1", "") })
		if !only(got, tc.result) {
			t.Errorf("%s answering %d %s: counted %v, want %s once", tc.path, tc.status, tc.answer, got, tc.result)
		}
		if r.status != tc.status || r.body != tc.answer {
			t.Errorf("%s: the client got %d %q, want WeChat's %d %q", tc.path, r.status, r.body, tc.status, tc.answer)
		}
	}
}

// CONNECT never opens a tunnel with WeChat's host: the gateway answers
// 405 itself.
func TestUnitConnectRefused(t *testing.T) {
	f := newFake(t)
	var log upstreamLog
	f.setHook(log.hook(nil))
	tr := unitTransport(t, []string{f.URL}, nil)
	var r unitResult
	got := counted(tr, func() { r = mustDo(t, tr, http.MethodConnect, f.URL+"/cgi-bin/user/info", "") })
	if r.status != http.StatusMethodNotAllowed || r.errcode != 43002 || r.runningCaddy != "error" || !only(got, "blocked") {
		t.Fatalf("CONNECT: %+v, counted %v", r, got)
	}
	if len(log.calls) != 0 {
		t.Fatalf("CONNECT reached the upstream")
	}
}

// A client that goes away while the token is fetched gets the
// cancellation back (reverse_proxy logs a 499), not an answer of the
// gateway's about the token.
func TestUnitClientGoneDuringFetch(t *testing.T) {
	f := newFake(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/cgi-bin/token" {
			return false
		}
		cancel() // the client leaves while the fetch is on
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return true
	})
	tr := unitTransport(t, []string{f.URL}, nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL+"/cgi-bin/user/info?openid=o1", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if resp != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("client gone: resp %v, err %v; want context.Canceled", resp != nil, err)
	}
}

// RoundTrip scrubs every answer it passes on: WeChat echoing the token
// (in the body or a header) never reaches the client, on the token route
// and on the routes that pass through.
func TestUnitRoundTripScrubs(t *testing.T) {
	f := newFake(t)
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/cgi-bin/token" {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo", r.URL.RawQuery)
		io.WriteString(w, `{"errcode":40003,"errmsg":"invalid openid: `+r.URL.RawQuery+`"}`)
		return true
	})
	tr := unitTransport(t, []string{f.URL}, nil)
	for _, path := range []string{"/cgi-bin/user/info?openid=o1", "/sns/jscode2session?js_code=c"} {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, f.URL+path, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		all := string(b) + " " + resp.Header.Get("X-Echo")
		for _, secret := range append(tr.acct.tokens.Recent(), testSecret) {
			if strings.Contains(all, secret) {
				t.Errorf("%s: the answer carries a credential: %s", path, all)
			}
		}
		if !strings.Contains(string(b), gateway.RedactedMark) || !strings.Contains(resp.Header.Get("X-Echo"), gateway.RedactedMark) {
			t.Errorf("%s: nothing was redacted: %s", path, all)
		}
	}
}

// An answer the scrub cannot read whole (a small body that breaks off)
// is an error for reverse_proxy, never a cut answer passed on.
func TestUnitRoundTripScrubError(t *testing.T) {
	f := newFake(t)
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/cgi-bin/token" {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, `{"errcode":0,`) // then the connection ends
		return true
	})
	tr := unitTransport(t, []string{f.URL}, nil)
	var resp *http.Response
	var err error
	got := counted(tr, func() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, f.URL+"/sns/userinfo?openid=o1", nil)
		resp, err = tr.RoundTrip(req)
	})
	if err == nil || resp != nil {
		t.Fatalf("a broken answer: resp %v, err %v; want an error", resp != nil, err)
	}
	if got["error"] != 1 {
		t.Errorf("counted %v, want an error", got)
	}
}
