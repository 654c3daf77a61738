package wechat

// The wechat transport's request path: what RoundTrip does with one
// proxied call (token, replay, answers of its own); scrub.go, sniff.go,
// query.go and requestbody.go hold its parts.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
)

// replayVar keeps a buffered request body in the request's vars, so that
// when reverse_proxy retries the request against the next upstream (after a
// dial error or a retry_match), the body this transport already drained is
// sent again instead of an empty one.
const replayVar = "wechat.replay_body"

// RoundTrip is the transport's entry point: what the account adds to one
// proxied call (reverse_proxy calls it once per attempt and keeps doing
// what it is good at: upstream choice, failover, streaming, hop-by-hop
// headers). The loop itself, with the one replay and the scrub, is
// requestPath's, shared with the open platform's transport.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.acct.enter()
	defer t.acct.leave()
	if req.Method == http.MethodConnect {
		// WeChat has no use for tunnels; never open one with our host.
		t.metrics.request("blocked")
		return gatewayError(req, http.StatusMethodNotAllowed, 43002, "caddy-wechat: CONNECT is not allowed"), nil
	}
	o := outbound{host: t, path: canonicalPath(req.URL.Path), route: classifyRequest(req.URL.Path, req.URL.RawQuery),
		cred: t.acct.tokens, what: "access_token", sent: t.sent, appid: t.acct.appid, secret: t.secret}
	if o.route == routeBlocked {
		if t.sdkTokens() {
			t.metrics.request("placeholder")
			return placeholderToken(req), nil
		}
		t.metrics.request("blocked")
		return gatewayError(req, http.StatusForbidden, 40002,
			"caddy-wechat: the token endpoints are the gateway's own; call the API you need without a token"), nil
	}
	if o.route.addsToken() {
		t.checkHost(req.URL.Host)
	}
	p := t.requestPath()
	return p.roundTrip(req, &o)
}

// requestPath is the loop's settings for this transport (built on the
// stack: a few field reads).
func (t *Transport) requestPath() requestPath {
	return requestPath{rt: &t.HTTPTransport, opaque: t.opaque, keepCallerAuth: t.KeepCallerAuth,
		maxReplay: t.maxReplay(), maxBuffered: t.maxBuffered(), bodyIdle: t.bodyReadTimeout()}
}

// pathHost of the account: its metrics (who is always ""), its scrub set
// and its redaction.
func (t *Transport) request(_, result string)  { t.metrics.request(result) }
func (t *Transport) retry(_, outcome string)   { t.metrics.retry(outcome) }
func (t *Transport) redact(_, s string) string { return t.acct.redact(s) }

// requestCopy is, in one allocation, all that one upstream attempt needs:
// the shallow copy of a request and its URL that send hands upstream (the
// RoundTripper contract forbids changing the caller's), the handle of its
// response's sniffed body, and room for the request target (path, query
// and token: about 250 bytes), which requestTarget writes in place.
//
// It is never pooled or reused: the handle keeps sniffBody's
// double-Close rule, and the target string aliases room, so room must
// never be written twice.
type requestCopy struct {
	req  http.Request
	url  url.URL
	body sniffBody
	room [targetRoom]byte
}

// targetRoom holds a WeChat request target with a long query (the token
// alone is about 140 bytes); a longer one costs one allocation of its
// own. With it the copy fills the allocator's 896-byte size class.
const targetRoom = 400

// replayBody is a request body, held in memory when it is small enough to
// be sent twice, or else the live stream to be sent once.
type replayBody struct {
	data   []byte // nil when streaming
	stream io.ReadCloser
	length int64
}

// emptyBody is shared by every request without a body (never mutated).
var emptyBody = &replayBody{data: []byte{}}

func (b *replayBody) reader() io.ReadCloser {
	return io.NopCloser(bytes.NewReader(b.data))
}

// gatewayError builds a response that the gateway itself answers.
func gatewayError(req *http.Request, status, code int, msg string) *http.Response {
	body, _ := json.Marshal(struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
	}{code, msg})
	return &http.Response{
		Status:        http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/json; charset=utf-8"}, "X-Wechat-Gateway": {"error"}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}

func resultOf(resp *http.Response, err error) string {
	if err != nil {
		return "error"
	}
	if resp.StatusCode >= 500 {
		return "upstream_5xx"
	}
	return "ok"
}

func resultOfCode(code int) string {
	if code == 0 {
		return "ok"
	}
	return "wechat_error"
}
