package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// The loop's own tests, with no Caddy and no engine: a scripted
// credential, a host that counts, and an upstream that answers by the
// token it is sent. The root's transport tests run the same loop behind
// the account's Transport; these pin each step here, beside it.

const (
	loopSecret = "loop-secret-0123456789abcdef0123"
	loopTok    = "TOKEN-ONE-0123456789abcdefghijklmnopqrstuvwxyz"
	loopFresh  = "TOKEN-TWO-0123456789abcdefghijklmnopqrstuvwxyz"
)

// stubCred is a Credential whose answers the test sets.
type stubCred struct {
	mu        sync.Mutex
	tok       *credential.Token
	tokErr    error
	fresh     *credential.Token
	replay    bool
	rejErr    error
	rejected  []string // the API paths RejectedOn was told of
	confirmed []string // the tokens Confirm was told of
}

func (c *stubCred) Token(context.Context) (*credential.Token, error) {
	if c.tokErr != nil {
		return nil, c.tokErr
	}
	return c.tok, nil
}

func (c *stubCred) RejectedOn(_ context.Context, t *credential.Token, api string) (*credential.Token, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rejected = append(c.rejected, t.Value+" "+api)
	return c.fresh, c.replay, c.rejErr
}

func (c *stubCred) Confirm(t *credential.Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.confirmed = append(c.confirmed, t.Value)
}

// countHost is a Host that counts results and retry outcomes by name.
type countHost struct {
	mu      sync.Mutex
	results map[string]int
	retries map[string]int
	who     []string
}

func newHost() *countHost { return &countHost{results: map[string]int{}, retries: map[string]int{}} }

func (h *countHost) Request(who, result string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.results[result]++
	h.who = append(h.who, who)
}

func (h *countHost) Retry(_, outcome string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.retries[outcome]++
}

func (h *countHost) Needles(string) *Needles {
	return NewNeedles(NeedleKey{}, nil, loopTok, loopFresh, loopSecret)
}

func (h *countHost) Redact(_, s string) string {
	for _, v := range []string{loopTok, loopFresh, loopSecret} {
		s = strings.ReplaceAll(s, v, "[token]")
	}
	return s
}

// only reports whether m holds exactly want (name → count).
func only(m map[string]int, want map[string]int) bool {
	if len(m) != len(want) {
		return false
	}
	for k, v := range want {
		if m[k] != v {
			return false
		}
	}
	return true
}

// seen is one request as the upstream got it.
type seen struct {
	target string // URL.Opaque, or Path?RawQuery
	query  url.Values
	header http.Header
	body   string
	hasNil bool // Body was nil
	length int64
}

// upstream answers each request with answer(token sent), recording it.
type upstream struct {
	mu     sync.Mutex
	calls  []seen
	answer func(token string, r *http.Request) (*http.Response, error)
}

func (u *upstream) RoundTrip(r *http.Request) (*http.Response, error) {
	s := seen{header: r.Header, hasNil: r.Body == nil, length: r.ContentLength}
	raw := r.URL.RawQuery
	s.target = r.URL.Path + "?" + raw
	if r.URL.Opaque != "" {
		s.target = r.URL.Opaque
		_, raw, _ = strings.Cut(r.URL.Opaque, "?")
	}
	s.query, _ = url.ParseQuery(raw)
	if r.Body != nil {
		b, _ := io.ReadAll(r.Body)
		s.body = string(b)
	}
	u.mu.Lock()
	u.calls = append(u.calls, s)
	u.mu.Unlock()
	return u.answer(s.query.Get("access_token"), r)
}

func answer(status int, ct, body string) *http.Response {
	return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {ct}},
		Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body))}
}

const tokenError = `{"errcode":40001,"errmsg":"invalid credential rid: 1"}`

// rejects answers 40001 to the tokens listed and OK to any other.
func rejects(bad ...string) func(string, *http.Request) (*http.Response, error) {
	return func(tok string, r *http.Request) (*http.Response, error) {
		for _, b := range bad {
			if tok == b {
				return answer(200, "text/plain", tokenError), nil
			}
		}
		return answer(200, "application/json", `{"errcode":0,"errmsg":"ok"}`), nil
	}
}

type loop struct {
	p    Path
	up   *upstream
	cred *stubCred
	host *countHost
}

func newLoop(ans func(string, *http.Request) (*http.Response, error)) *loop {
	up := &upstream{answer: ans}
	return &loop{
		p:    Path{RT: up, MaxReplay: 1 << 20, MaxBuffered: 1 << 20, BodyIdle: time.Second},
		up:   up,
		cred: &stubCred{tok: credential.NewToken(loopTok, 7200, time.Now(), "test"), fresh: credential.NewToken(loopFresh, 7200, time.Now(), "test"), replay: true},
		host: newHost(),
	}
}

func (l *loop) outbound(path string) *Outbound {
	return &Outbound{Host: l.host, Path: path, Route: ClassifyRequest(path, ""), Cred: l.cred, What: "access_token",
		AppID: "wxloop00000000001", Secret: loopSecret}
}

func (l *loop) do(t *testing.T, o *Outbound, method, target, body string) (*http.Response, string, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := l.p.RoundTrip(req, o)
	if err != nil || resp == nil {
		return resp, "", err
	}
	b, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if rerr != nil {
		t.Fatal(rerr)
	}
	return resp, string(b), nil
}

// An ordinary call gets the token, the caller's copy dropped; the
// answer confirms the token; nothing is replayed.
func TestLoopAddsTokenAndConfirms(t *testing.T) {
	l := newLoop(rejects())
	o := l.outbound("/cgi-bin/user/info")
	resp, body, err := l.do(t, o, http.MethodGet, "https://api.weixin.qq.com/cgi-bin/user/info?openid=o1&access_token=mine", "")
	if err != nil || resp.StatusCode != 200 || !strings.Contains(body, `"errcode":0`) {
		t.Fatalf("got %v %v %q", resp, err, body)
	}
	if len(l.up.calls) != 1 {
		t.Fatalf("%d upstream calls, want 1", len(l.up.calls))
	}
	c := l.up.calls[0]
	if got := c.query["access_token"]; len(got) != 1 || got[0] != loopTok || c.query.Get("openid") != "o1" {
		t.Errorf("query %v: want the gateway's one token and the caller's openid", c.query)
	}
	if !c.hasNil || c.length != 0 {
		t.Errorf("no body: upstream got Body nil %v, length %d; want nil, 0", c.hasNil, c.length)
	}
	if len(l.cred.confirmed) != 1 || l.cred.confirmed[0] != loopTok || len(l.cred.rejected) != 0 {
		t.Errorf("confirmed %v, rejected %v; want the token confirmed once", l.cred.confirmed, l.cred.rejected)
	}
	if !only(l.host.results, map[string]int{"ok": 1}) || len(l.host.retries) != 0 {
		t.Errorf("results %v retries %v", l.host.results, l.host.retries)
	}
}

// A WeChat error other than a token's is the caller's answer, counted as
// wechat_error, and still confirms the token.
func TestLoopWechatErrorIsNoEvidence(t *testing.T) {
	l := newLoop(func(string, *http.Request) (*http.Response, error) {
		return answer(200, "application/json", `{"errcode":40003,"errmsg":"invalid openid"}`), nil
	})
	_, body, err := l.do(t, l.outbound("/cgi-bin/user/info"), http.MethodGet, "https://api.weixin.qq.com/cgi-bin/user/info", "")
	if err != nil || !strings.Contains(body, "40003") {
		t.Fatalf("%v %q", err, body)
	}
	if !only(l.host.results, map[string]int{"wechat_error": 1}) || len(l.cred.confirmed) != 1 || len(l.cred.rejected) != 0 {
		t.Errorf("results %v confirmed %v rejected %v", l.host.results, l.cred.confirmed, l.cred.rejected)
	}
}

// A token error is evidence on the path sent, lower-cased; the call is
// replayed once with the fresh token and the same body, and the fresh
// token is confirmed.
func TestLoopReplaysOnceWithTheSameBody(t *testing.T) {
	l := newLoop(rejects(loopTok))
	o := l.outbound("/CGI-BIN/Message/Custom/Send")
	_, body, err := l.do(t, o, http.MethodPost, "https://api.weixin.qq.com/x", `{"touser":"o1"}`)
	if err != nil || !strings.Contains(body, `"errcode":0`) {
		t.Fatalf("%v %q", err, body)
	}
	if len(l.up.calls) != 2 {
		t.Fatalf("%d upstream calls, want 2", len(l.up.calls))
	}
	for i, want := range []string{loopTok, loopFresh} {
		c := l.up.calls[i]
		if c.query.Get("access_token") != want || c.body != `{"touser":"o1"}` || c.length != int64(len(`{"touser":"o1"}`)) {
			t.Errorf("call %d: token %q body %q length %d", i, c.query.Get("access_token"), c.body, c.length)
		}
	}
	if len(l.cred.rejected) != 1 || l.cred.rejected[0] != loopTok+" /cgi-bin/message/custom/send" {
		t.Errorf("rejected %v: want the first token, on the lower-cased path sent", l.cred.rejected)
	}
	if len(l.cred.confirmed) != 1 || l.cred.confirmed[0] != loopFresh {
		t.Errorf("confirmed %v, want the fresh token only", l.cred.confirmed)
	}
	if !only(l.host.results, map[string]int{"ok": 1}) || !only(l.host.retries, map[string]int{"ok": 1}) {
		t.Errorf("results %v retries %v", l.host.results, l.host.retries)
	}
}

// When the engine has no better token, or the fresh one fails too, the
// caller gets WeChat's own answer, after at most one replay.
func TestLoopNoReplayOrFailedReplay(t *testing.T) {
	for _, tc := range []struct {
		name    string
		replay  bool
		rejErr  error
		bad     []string
		calls   int
		outcome string
	}{
		{"engine says no", false, nil, []string{loopTok}, 1, "no_fresh_token"},
		{"engine fails", true, errors.New("no"), []string{loopTok}, 1, "no_fresh_token"},
		{"fresh fails too", true, nil, []string{loopTok, loopFresh}, 2, "failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLoop(rejects(tc.bad...))
			l.cred.replay, l.cred.rejErr = tc.replay, tc.rejErr
			resp, body, err := l.do(t, l.outbound("/cgi-bin/user/info"), http.MethodGet, "https://api.weixin.qq.com/cgi-bin/user/info", "")
			if err != nil || resp.StatusCode != 200 || !strings.Contains(body, "40001") {
				t.Fatalf("%v %q: want WeChat's 40001", err, body)
			}
			if len(l.up.calls) != tc.calls || len(l.cred.confirmed) != 0 {
				t.Errorf("%d calls (want %d), confirmed %v", len(l.up.calls), tc.calls, l.cred.confirmed)
			}
			if !only(l.host.results, map[string]int{"token_error": 1}) || !only(l.host.retries, map[string]int{tc.outcome: 1}) {
				t.Errorf("results %v retries %v; want token_error, %s", l.host.results, l.host.retries, tc.outcome)
			}
		})
	}
}

// A body too large to replay still counts as evidence (so large uploads
// cannot keep a dead token), but is not sent again.
func TestLoopNotReplayableStillEvidence(t *testing.T) {
	l := newLoop(rejects(loopTok))
	l.p.MaxReplay = 4
	_, body, err := l.do(t, l.outbound("/cgi-bin/media/upload"), http.MethodPost, "https://api.weixin.qq.com/x", "0123456789")
	if err != nil || !strings.Contains(body, "40001") {
		t.Fatalf("%v %q", err, body)
	}
	if len(l.up.calls) != 1 || l.up.calls[0].body != "0123456789" {
		t.Fatalf("calls %v: want the body streamed once", l.up.calls)
	}
	if len(l.cred.rejected) != 1 {
		t.Errorf("rejected %v: the evidence must reach the engine", l.cred.rejected)
	}
	if !only(l.host.results, map[string]int{"token_error": 1}) || !only(l.host.retries, map[string]int{"not_replayable": 1}) {
		t.Errorf("results %v retries %v", l.host.results, l.host.retries)
	}
}

// No token: an answer in WeChat's shape, with the status a client can act
// on, the credential named, and nothing secret in it.
func TestLoopTokenUnavailable(t *testing.T) {
	leaky := errors.New("fetch failed for secret " + loopSecret)
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   int
	}{
		{"backoff", &credential.BackoffError{Err: leaky, RetryIn: time.Second}, 503, -1},
		{"busy", &credential.APIError{Code: -1, Msg: "system busy"}, 503, -1},
		{"quota 45009", &credential.APIError{Code: 45009, Msg: "reach max api daily quota limit"}, 503, 45009},
		{"quota 45011", &credential.APIError{Code: 45011, Msg: "api minute-quota reach limit"}, 503, 45011},
		{"deadline", fmt.Errorf("waiting: %w", context.DeadlineExceeded), 503, -1},
		{"bad secret", &credential.APIError{Code: 40125, Msg: "invalid appsecret"}, 502, 40125},
		{"ip", &credential.APIError{Code: 40164, Msg: "invalid ip"}, 502, 40164},
		{"other", leaky, 503, -1}, // not WeChat's answer: a passing failure
		{"unknown authorizer", credential.ErrUnknownAuthorizer, 404, 61003},
		{"revoked", fmt.Errorf("x: %w", credential.ErrAuthorizerRevoked), 404, 61003},
		{"canceled, client still there", context.Canceled, 503, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLoop(rejects())
			l.cred.tokErr = tc.err
			o := l.outbound("/cgi-bin/user/info")
			o.What = "authorizer_access_token"
			resp, body, err := l.do(t, o, http.MethodGet, "https://api.weixin.qq.com/cgi-bin/user/info", "")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status || !strings.Contains(body, fmt.Sprintf(`"errcode":%d,`, tc.code)) {
				t.Errorf("got %d %s; want %d errcode %d", resp.StatusCode, body, tc.status, tc.code)
			}
			if resp.Header.Get("X-Wechat-Gateway") != "error" || strings.Contains(body, loopSecret) {
				t.Errorf("header %q, body %s: want the gateway's answer, redacted", resp.Header.Get("X-Wechat-Gateway"), body)
			}
			if tc.status != 404 && !strings.Contains(body, "no authorizer_access_token") {
				t.Errorf("body %s does not name the credential", body)
			}
			if len(l.up.calls) != 0 || !only(l.host.results, map[string]int{"token_unavailable": 1}) {
				t.Errorf("%d calls, results %v", len(l.up.calls), l.host.results)
			}
		})
	}
}

// A client that went away while its token was fetched gets no answer:
// the error goes back to reverse_proxy (a 499 in its log).
func TestLoopClientGone(t *testing.T) {
	l := newLoop(rejects())
	l.cred.tokErr = context.Canceled
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.weixin.qq.com/cgi-bin/user/info", nil)
	resp, err := l.p.RoundTrip(req, l.outbound("/cgi-bin/user/info"))
	if resp != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, %v; want context.Canceled", resp, err)
	}
	if len(l.host.results) != 0 {
		t.Errorf("results %v: a gone client is not counted", l.host.results)
	}
}

// A body holding the placeholder is refused before any token is taken.
func TestLoopPlaceholderInBody(t *testing.T) {
	l := newLoop(rejects())
	resp, body, err := l.do(t, l.outbound("/cgi-bin/user/info"), http.MethodPost, "https://api.weixin.qq.com/x", `{"t":"`+strings.ToLower(Placeholder)+`"}`)
	if err != nil || resp.StatusCode != 400 || !strings.Contains(body, "40097") {
		t.Fatalf("%v %v %q", resp, err, body)
	}
	if len(l.up.calls) != 0 || !only(l.host.results, map[string]int{"blocked": 1}) {
		t.Errorf("%d calls, results %v", len(l.up.calls), l.host.results)
	}
}

// Routes without a token: login gets appid and secret, the body streams
// as it is, and the result is counted by status.
func TestLoopRoutesWithoutToken(t *testing.T) {
	for _, tc := range []struct {
		status int
		result string
	}{{200, "ok"}, {499, "ok"}, {500, "upstream_5xx"}, {502, "upstream_5xx"}} {
		l := newLoop(func(string, *http.Request) (*http.Response, error) {
			return answer(tc.status, "application/json", `{"openid":"o1"}`), nil
		})
		o := l.outbound("/sns/jscode2session")
		_, _, err := l.do(t, o, http.MethodPost, "https://api.weixin.qq.com/sns/jscode2session?js_code=C&appid=evil&secret=evil", "x=1")
		if err != nil {
			t.Fatal(err)
		}
		c := l.up.calls[0]
		if c.query.Get("appid") != o.AppID || c.query.Get("secret") != loopSecret || c.query.Get("js_code") != "C" || len(c.query["appid"]) != 1 {
			t.Errorf("query %v", c.query)
		}
		if c.body != "x=1" || c.query.Get("access_token") != "" {
			t.Errorf("body %q, token %q", c.body, c.query.Get("access_token"))
		}
		if len(l.cred.confirmed)+len(l.cred.rejected) != 0 || !only(l.host.results, map[string]int{tc.result: 1}) {
			t.Errorf("results %v, cred used %v %v", l.host.results, l.cred.confirmed, l.cred.rejected)
		}
	}
	// A transport error on such a route is counted as an error.
	l := newLoop(func(string, *http.Request) (*http.Response, error) { return nil, errors.New("dial") })
	if _, _, err := l.do(t, l.outbound("/sns/jscode2session"), http.MethodGet, "https://api.weixin.qq.com/sns/jscode2session", ""); err == nil {
		t.Fatal("want the dial error")
	}
	if !only(l.host.results, map[string]int{"error": 1}) {
		t.Errorf("results %v", l.host.results)
	}
}

// A transport error quotes the URL, token included: what comes back is
// redacted, and counted as an error (on the first send and on the replay).
func TestLoopTransportErrorRedacted(t *testing.T) {
	for _, onReplay := range []bool{false, true} {
		l := newLoop(func(tok string, r *http.Request) (*http.Response, error) {
			if tok == loopTok && onReplay {
				return answer(200, "text/plain", tokenError), nil
			}
			return nil, &url.Error{Op: "Get", URL: "https://api.weixin.qq.com/x?access_token=" + tok, Err: errors.New("refused")}
		})
		_, _, err := l.do(t, l.outbound("/cgi-bin/user/info"), http.MethodGet, "https://api.weixin.qq.com/cgi-bin/user/info", "")
		if err == nil || strings.Contains(err.Error(), loopTok) || strings.Contains(err.Error(), loopFresh) || !strings.Contains(err.Error(), "[token]") {
			t.Fatalf("replay %v: err %v", onReplay, err)
		}
		if !only(l.host.results, map[string]int{"error": 1}) {
			t.Errorf("replay %v: results %v", onReplay, l.host.results)
		}
		if onReplay && !only(l.host.retries, map[string]int{"error": 1}) {
			t.Errorf("retries %v", l.host.retries)
		}
	}
	// An error with nothing to redact keeps its type (dial errors fail over).
	dial := &url.Error{Op: "Get", URL: "https://api.weixin.qq.com/", Err: errors.New("refused")}
	l := newLoop(func(string, *http.Request) (*http.Response, error) { return nil, dial })
	if _, _, err := l.do(t, l.outbound("/cgi-bin/user/info"), http.MethodGet, "https://api.weixin.qq.com/cgi-bin/user/info", ""); err != dial {
		t.Errorf("err %v: want the same error value", err)
	}
}

// A small answer cut short is an error (502 for the client), not a
// truncated 200, on the first send and on the replay.
func TestLoopCutAnswerIsError(t *testing.T) {
	for _, onReplay := range []bool{false, true} {
		l := newLoop(func(tok string, r *http.Request) (*http.Response, error) {
			if tok == loopTok && onReplay {
				return answer(200, "text/plain", tokenError), nil
			}
			return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(io.MultiReader(strings.NewReader(`{"errcode":0,"token":"`+tok), cutReader{})), ContentLength: -1}, nil
		})
		_, _, err := l.do(t, l.outbound("/cgi-bin/user/info"), http.MethodGet, "https://api.weixin.qq.com/cgi-bin/user/info", "")
		if err == nil || strings.Contains(err.Error(), loopTok) {
			t.Fatalf("replay %v: err %v", onReplay, err)
		}
		if !only(l.host.results, map[string]int{"error": 1}) {
			t.Errorf("replay %v: results %v", onReplay, l.host.results)
		}
		if onReplay && !only(l.host.retries, map[string]int{"error": 1}) {
			t.Errorf("retries %v", l.host.retries)
		}
	}
}

type cutReader struct{}

func (cutReader) Read([]byte) (int, error) { return 0, errors.New("cut " + loopTok) }

// Every answer is scrubbed; one the scrub cannot read is refused.
func TestLoopScrubs(t *testing.T) {
	l := newLoop(func(tok string, r *http.Request) (*http.Response, error) {
		return answer(200, "application/json", `{"errcode":0,"echo":"`+tok+`"}`), nil
	})
	_, body, err := l.do(t, l.outbound("/cgi-bin/user/info"), http.MethodGet, "https://api.weixin.qq.com/cgi-bin/user/info", "")
	if err != nil || strings.Contains(body, loopTok) || !strings.Contains(body, RedactedMark) {
		t.Fatalf("%v %q", err, body)
	}
	l = newLoop(func(string, *http.Request) (*http.Response, error) {
		r := answer(200, "application/json", "x")
		r.Header.Set("Content-Encoding", "br")
		return r, nil
	})
	resp, _, err := l.do(t, l.outbound("/cgi-bin/user/info"), http.MethodGet, "https://api.weixin.qq.com/cgi-bin/user/info", "")
	if resp != nil || !errors.Is(err, errUnreadableEncoding) {
		t.Fatalf("got %v, %v; want errUnreadableEncoding", resp, err)
	}
	if l.host.results["error"] != 1 {
		t.Errorf("results %v: the refusal counts as an error", l.host.results)
	}
}

// The open platform's authorizer lists lose their refresh tokens.
func TestLoopRefreshTokensScrubbed(t *testing.T) {
	l := newLoop(func(string, *http.Request) (*http.Response, error) {
		return answer(200, "application/json", `{"list":[{"authorizer_appid":"wxa","refresh_token":"refresh-0123456789"}]}`), nil
	})
	o := l.outbound("/cgi-bin/component/api_get_authorizer_list")
	o.Route, o.Refresh, o.Identity = RouteComponent, true, true
	_, body, err := l.do(t, o, http.MethodPost, "https://api.weixin.qq.com/x", `{}`)
	if err != nil || strings.Contains(body, "refresh-0123456789") || !strings.Contains(body, `"refresh_token":""`) {
		t.Fatalf("%v %q", err, body)
	}
	c := l.up.calls[0]
	if c.query.Get("component_access_token") != loopTok || c.header.Get("Accept-Encoding") != "" {
		t.Errorf("query %v, Accept-Encoding %q: want the component token and an unencoded answer", c.query, c.header.Get("Accept-Encoding"))
	}
}

// The header policy: the gateway's own header and the caller's
// credentials stay behind (unless kept), the Host is the upstream's, and
// with Opaque the whole target goes in URL.Opaque.
func TestLoopSendsWhatWasJudged(t *testing.T) {
	for _, opaque := range []bool{false, true} {
		l := newLoop(rejects())
		l.p.Opaque = opaque
		o := l.outbound("/cgi-bin/user/info")
		o.DropHeader = "Wechat-Authorizer-Appid"
		req, _ := http.NewRequest(http.MethodGet, "https://api.weixin.qq.com/authorizer/wxa/cgi-bin/user/info?openid=o1", nil)
		req.Host = "evil.example"
		req.Header.Set("Authorization", "Basic x")
		req.Header.Set("Wechat-Authorizer-Appid", "wxa")
		req.Header.Set("X-Keep", "1")
		resp, err := l.p.RoundTrip(req, o)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		c := l.up.calls[0]
		if want := "/cgi-bin/user/info?openid=o1&access_token=" + loopTok; c.target != want {
			t.Errorf("opaque %v: target %q, want %q", opaque, c.target, want)
		}
		if c.header.Get("Authorization") != "" || c.header.Get("Wechat-Authorizer-Appid") != "" || c.header.Get("X-Keep") != "1" {
			t.Errorf("opaque %v: headers %v", opaque, c.header)
		}
		if req.Header.Get("Authorization") == "" || req.URL.Path != "/authorizer/wxa/cgi-bin/user/info" {
			t.Errorf("the caller's request was changed: %v %s", req.Header, req.URL.Path)
		}
	}
	l := newLoop(rejects())
	l.p.KeepCallerAuth = true
	req, _ := http.NewRequest(http.MethodGet, "https://api.weixin.qq.com/cgi-bin/user/info", nil)
	req.Header.Set("Authorization", "Basic x")
	resp, err := l.p.RoundTrip(req, l.outbound("/cgi-bin/user/info"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if l.up.calls[0].header.Get("Authorization") != "Basic x" {
		t.Errorf("keep_caller_auth: Authorization dropped")
	}
}

// The tokens sent are noted in the outbound's ring, for the scrub.
func TestLoopNotesTokensSent(t *testing.T) {
	l := newLoop(rejects(loopTok))
	o := l.outbound("/cgi-bin/user/info")
	o.Sent = new(TokenRing)
	if _, _, err := l.do(t, o, http.MethodGet, "https://api.weixin.qq.com/cgi-bin/user/info", ""); err != nil {
		t.Fatal(err)
	}
	got := o.Sent.AppendTo(nil)
	if len(got) != 2 || got[0] != loopTok || got[1] != loopFresh {
		t.Errorf("ring %v: want both tokens sent", got)
	}
}

// A placeholder anywhere but the body (a header here) never leaves.
func TestLoopPlaceholderInHeader(t *testing.T) {
	l := newLoop(rejects())
	req, _ := http.NewRequest(http.MethodGet, "https://api.weixin.qq.com/cgi-bin/user/info", bytes.NewReader(nil))
	req.Header.Set("X-T", Placeholder)
	resp, err := l.p.RoundTrip(req, l.outbound("/cgi-bin/user/info"))
	if err != nil || resp.StatusCode != 400 {
		t.Fatalf("%v %v", resp, err)
	}
	resp.Body.Close()
	if len(l.up.calls) != 0 {
		t.Errorf("%d calls: the placeholder was sent", len(l.up.calls))
	}
}
