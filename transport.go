package wechat

// The wechat transport's request path: what RoundTrip does with one
// proxied call (token, replay, answers of its own); scrub.go, sniff.go,
// query.go and requestbody.go hold its parts.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
)

// replayVar keeps a buffered request body in the request's vars, so that
// when reverse_proxy retries the request against the next upstream (after a
// dial error or a retry_match), the body this transport already drained is
// sent again instead of an empty one.
const replayVar = "wechat.replay_body"

// RoundTrip is the transport's entry point: the proxied round trip, then
// the scrub, so that no answer reaching the client (or reverse_proxy's
// logs) carries the secret or a token the account has held.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.acct.enter()
	defer t.acct.leave()
	resp, err := t.roundTrip(req)
	if err != nil || resp == nil {
		return resp, err
	}
	if err := t.scrubResponse(req, resp); err != nil {
		resp.Body.Close()
		t.metrics.request("error")
		return nil, t.redactErr(err)
	}
	return resp, nil
}

// roundTrip sends one proxied request to WeChat with the gateway's
// credentials. reverse_proxy calls it (through RoundTrip, which scrubs the
// answer) once per attempt and keeps doing what it is good at (upstream
// choice, failover, streaming, hop-by-hop headers); this adds the token and
// the one replay on a token error.
func (t *Transport) roundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodConnect {
		// WeChat has no use for tunnels; never open one with our host.
		t.metrics.request("blocked")
		return gatewayError(req, http.StatusMethodNotAllowed, 43002, "caddy-wechat: CONNECT is not allowed"), nil
	}
	r := classifyRequest(req.URL.Path, req.URL.RawQuery)
	switch r {
	case routeBlocked:
		if t.sdkTokens() {
			t.metrics.request("placeholder")
			return placeholderToken(req), nil
		}
		t.metrics.request("blocked")
		return gatewayError(req, http.StatusForbidden, 40002,
			"caddy-wechat: the token endpoints are the gateway's own; call the API you need without a token"), nil
	case routeUserSNS, routeLogin, routeAppIDOnly, routeOwnCred:
		// No access_token here: login calls get appid (and secret), and
		// other /sns calls carry the user's own OAuth token untouched.
		resp, _, err := t.send(req, req.Body, req.ContentLength, r, "")
		t.metrics.request(resultOf(resp, err))
		return resp, err
	}

	body, replayable, err := t.readBody(req)
	if err != nil {
		return nil, err
	}
	if bodyHoldsPlaceholder(body.data) {
		t.metrics.request("blocked")
		return gatewayError(req, http.StatusBadRequest, 40097, "caddy-wechat: the request body carries the gateway's placeholder token; it was not sent"), nil
	}
	tok, err := t.acct.Token(req.Context())
	if err != nil {
		return t.tokenUnavailable(req, err)
	}
	t.checkHost(req.URL.Host)
	resp, slot, err := t.sendToken(req, body, tok)
	if err != nil {
		t.metrics.request("error")
		return nil, err
	}
	code, err := sniffInto(resp, slot)
	if err != nil {
		t.metrics.request("error")
		return nil, t.redactErr(err)
	}
	if !isTokenErrcode(code) {
		t.acct.tokens.Confirm(tok) // fresh evidence that tok works (credential.Cache.Confirm)
		t.metrics.request(resultOfCode(code))
		return resp, nil
	}

	// WeChat rejected the token on this API path. The engine decides what
	// that evidence is worth (credential.Cache.RejectedOn: replaced
	// already, held, probed valid for this path, or really bad), and
	// whether to replay once with the same body. A body too large to
	// replay still counts as evidence, so that large uploads alone cannot
	// keep a dead token.
	fresh, replay, err := t.acct.Rejected(req.Context(), tok, canonicalPath(req.URL.Path))
	if !replayable {
		t.metrics.retry("not_replayable")
		t.metrics.request("token_error")
		return resp, nil
	}
	if err != nil || !replay {
		// No better token: the client gets WeChat's own answer.
		t.metrics.retry("no_fresh_token")
		t.metrics.request("token_error")
		return resp, nil
	}
	resp.Body.Close()
	resp, slot, err = t.sendToken(req, body, fresh)
	if err != nil {
		t.metrics.retry("error")
		t.metrics.request("error")
		return nil, err
	}
	code, err = sniffInto(resp, slot)
	if err != nil {
		t.metrics.retry("error")
		t.metrics.request("error")
		return nil, t.redactErr(err)
	}
	if isTokenErrcode(code) {
		t.metrics.retry("failed")
		t.metrics.request("token_error")
		return resp, nil
	}
	// The fresh token answered: if it fails later, that is a revocation
	// to repair at once, not a glitch to sit out (credential.Cache.Confirm).
	t.acct.tokens.Confirm(fresh)
	t.metrics.retry("ok")
	t.metrics.request("ok")
	return resp, nil
}

// sendToken sends req with token tok and a fresh reader over body.
func (t *Transport) sendToken(req *http.Request, body *replayBody, tok *tokenEntry) (*http.Response, *sniffBody, error) {
	t.sent.note(tok)
	if len(body.data) > 0 {
		return t.send(req, body.reader(), int64(len(body.data)), routeToken, tok.Escaped())
	}
	if body.data != nil {
		return t.send(req, nil, 0, routeToken, tok.Escaped()) // a reader over nothing would be two allocations wasted
	}
	return t.send(req, body.stream, body.length, routeToken, tok.Escaped())
}

// linePath is the path part of the request line send writes (the
// canonical path, escaped as net/http would escape it), or "" when the
// query goes in RawQuery instead (t.opaque).
func (t *Transport) linePath(req *http.Request) string {
	if !t.opaque {
		return ""
	}
	u := url.URL{Path: canonicalPath(req.URL.Path)}
	return u.EscapedPath()
}

// send performs one round trip of a shallow copy of req with the request
// target from requestTarget for route r (token pre-escaped): with t.opaque
// the whole target, path and query, goes in the copy's URL.Opaque, which
// net/http writes as it is (the path and a RawQuery would cost it a
// string to join them); else it is the query alone. The Host header is
// always the upstream's own: a client's Host is never passed on, so it
// cannot steer anything at WeChat's edge. It also returns an unused
// sniffBody for this response's sniff.
func (t *Transport) send(req *http.Request, body io.ReadCloser, length int64, r route, token string) (*http.Response, *sniffBody, error) {
	c := &requestCopy{req: *req, url: *req.URL} // the one allocation: see requestCopy
	target := requestTarget(c.room[:0], t.linePath(req), req.URL.RawQuery, r, token, t.acct.appid, t.secret)
	out, u := &c.req, &c.url
	u.Path, u.RawPath = canonicalPath(u.Path), "" // the path the route was judged on
	u.Opaque, u.RawQuery, u.ForceQuery = "", target, false
	if t.opaque {
		u.Opaque, u.RawQuery = target, ""
	}
	out.URL = u
	out.Host = u.Host
	out.Header = t.upstreamHeader(req.Header)
	out.Body = body
	out.ContentLength = length
	if length == 0 {
		out.Body = nil // what reverse_proxy sends for no body; NoBody costs net/http a LimitReader
	}
	if refused := refusePlaceholder(out); refused != nil {
		return refused, nil, nil // never let a placeholder reach WeChat
	}
	resp, err := t.HTTPTransport.RoundTrip(out)
	if err != nil {
		// A transport error can quote the URL, and with it the token.
		return nil, nil, t.redactErr(err)
	}
	return resp, &c.body, nil
}

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

// tokenUnavailable answers a request for which no token could be had, with
// a JSON body in WeChat's own shape so that any client SDK can read it.
func (t *Transport) tokenUnavailable(req *http.Request, err error) (*http.Response, error) {
	if errors.Is(err, context.Canceled) && req.Context().Err() != nil {
		return nil, err // the client went away; reverse_proxy logs a 499
	}
	status, code := http.StatusBadGateway, -1
	var we *wechatError
	if errors.As(err, &we) {
		code = we.Code
	}
	var be *backoffError
	if errors.As(err, &be) || code == -1 || code == 45009 || code == 45011 || errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusServiceUnavailable
	}
	t.metrics.request("token_unavailable")
	return gatewayError(req, status, code, "caddy-wechat: no access_token: "+t.acct.redact(err.Error())), nil
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

// redactErr strips the gateway's credentials from an error's text.
func (t *Transport) redactErr(err error) error {
	msg := err.Error()
	clean := t.acct.redact(msg) // the secret, recent tokens, rids
	if clean == msg {
		return err // keep the error's type for reverse_proxy (dial errors fail over)
	}
	return errors.New(clean)
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
