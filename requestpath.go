package wechat

// The one request loop of every transport: token → send → sniff →
// evidence → replay → confirm, then the scrub. The account transport
// (wechat) and the open platform's (wechat_component) differ only in the
// outbound they describe: which credential, which path, which route. So
// every rule of README "How it works" (header policy, encodings, rid/get
// on the path sent, evidence before a drop, body replay and reservation,
// error mapping, scrubbing) is written here once and holds on every path,
// the way golang.org/x/oauth2 writes Transport once over any TokenSource.

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// pathCredential is what the loop needs of a source of credentials: the
// engine's *credential.Cache is one for every kind (account, WeCom agent,
// authorizer, component).
type pathCredential interface {
	// Token returns a usable token; warm, one atomic load.
	Token(ctx context.Context) (*tokenEntry, error)
	// RejectedOn weighs a token errcode from the API path api (probe,
	// held token, ceiling) and says whether to replay, and with what.
	RejectedOn(ctx context.Context, t *tokenEntry, api string) (fresh *tokenEntry, replay bool, err error)
	// Confirm records that t answered a call: fresh evidence that it
	// works (one atomic load when nothing is held).
	Confirm(t *tokenEntry)
}

// pathHost is the transport behind an outbound: its counters, the values
// no answer may carry, and the redaction of its errors. who is the
// authorizer a call names ("" for an account or the component).
type pathHost interface {
	request(who, result string)
	retry(who, outcome string)
	needles(who string) *needleSet
	redact(who, s string) string
}

// requestPath is the loop's settings, one per provisioned transport.
type requestPath struct {
	rt             http.RoundTripper // the embedded reverseproxy.HTTPTransport
	opaque         bool              // the request target goes in URL.Opaque
	keepCallerAuth bool
	maxReplay      int64
	maxBuffered    int64
	bodyIdle       time.Duration
}

// outbound is one call as its transport decided it. It lives on the
// caller's stack.
type outbound struct {
	host  pathHost
	path  string // canonical path sent upstream: every rule is judged on it
	route route
	cred  pathCredential // token routes only
	what  string         // the credential's name in a client-facing error
	sent  *tokenRing     // tokens sent lately (the account's scrub), or nil

	// appid and secret: what login routes add (the account's); on the
	// component's SNS routes appid is the component's, and authorizer
	// the merchant's appid a call names.
	appid, secret, authorizer string

	dropHeader string // a request header of the gateway's own, never sent
	identity   bool   // ask for an unencoded answer: it is rewritten whole
	refresh    bool   // the answer holds authorizer refresh tokens
}

// api is the API path the evidence is about, in one letter case: the
// path sent, lower-cased (no allocation for a lower-case path).
func (o *outbound) api() string { return strings.ToLower(o.path) }

// roundTrip is the loop: the exchange, then the scrub, so that no answer
// reaching the client (or reverse_proxy's logs) carries a credential.
func (p *requestPath) roundTrip(req *http.Request, o *outbound) (*http.Response, error) {
	resp, err := p.exchange(req, o)
	if err != nil || resp == nil {
		return resp, err
	}
	if err := scrubAnswer(o.path, resp, o.host.needles(o.authorizer)); err != nil {
		resp.Body.Close()
		o.host.request(o.authorizer, "error")
		return nil, redactErr(o.host, o.authorizer, err)
	}
	if o.refresh {
		return scrubRefreshTokens(resp)
	}
	return resp, nil
}

func (p *requestPath) exchange(req *http.Request, o *outbound) (*http.Response, error) {
	if !o.route.addsToken() {
		// No token here: login calls get appid (and secret), and other
		// /sns calls carry the user's own OAuth token untouched.
		resp, _, err := p.send(req, o, req.Body, req.ContentLength, "")
		o.host.request(o.authorizer, resultOf(resp, err))
		return resp, err
	}
	body, replayable, err := bufferBody(req, p.maxReplay, p.maxBuffered, p.bodyIdle)
	if err != nil {
		return nil, err
	}
	if bodyHoldsPlaceholder(body.data) {
		o.host.request(o.authorizer, "blocked")
		return gatewayError(req, http.StatusBadRequest, 40097, "caddy-wechat: the request body carries the gateway's placeholder token; it was not sent"), nil
	}
	tok, err := o.cred.Token(req.Context())
	if err != nil {
		return p.unavailable(req, o, err)
	}
	resp, slot, err := p.sendToken(req, o, body, tok)
	if err != nil {
		o.host.request(o.authorizer, "error")
		return nil, err
	}
	code, err := sniffInto(resp, slot)
	if err != nil {
		o.host.request(o.authorizer, "error")
		return nil, redactErr(o.host, o.authorizer, err)
	}
	if !isTokenErrcode(code) {
		o.cred.Confirm(tok) // fresh evidence that tok works (credential.Cache.Confirm)
		o.host.request(o.authorizer, resultOfCode(code))
		return resp, nil
	}

	// WeChat rejected the token on this API path. The engine decides what
	// that evidence is worth (credential.Cache.RejectedOn: replaced
	// already, held, probed valid for this path, or really bad), and
	// whether to replay once with the same body. A body too large to
	// replay still counts as evidence, so that large uploads alone cannot
	// keep a dead token.
	fresh, replay, err := o.cred.RejectedOn(req.Context(), tok, o.api())
	if !replayable {
		o.host.retry(o.authorizer, "not_replayable")
		o.host.request(o.authorizer, "token_error")
		return resp, nil
	}
	if err != nil || !replay {
		// No better token: the client gets WeChat's own answer.
		o.host.retry(o.authorizer, "no_fresh_token")
		o.host.request(o.authorizer, "token_error")
		return resp, nil
	}
	resp.Body.Close()
	resp, slot, err = p.sendToken(req, o, body, fresh)
	if err != nil {
		o.host.retry(o.authorizer, "error")
		o.host.request(o.authorizer, "error")
		return nil, err
	}
	code, err = sniffInto(resp, slot)
	if err != nil {
		o.host.retry(o.authorizer, "error")
		o.host.request(o.authorizer, "error")
		return nil, redactErr(o.host, o.authorizer, err)
	}
	if isTokenErrcode(code) {
		o.host.retry(o.authorizer, "failed")
		o.host.request(o.authorizer, "token_error")
		return resp, nil
	}
	// The fresh token answered: if it fails later, that is a revocation
	// to repair at once, not a glitch to sit out (credential.Cache.Confirm).
	o.cred.Confirm(fresh)
	o.host.retry(o.authorizer, "ok")
	o.host.request(o.authorizer, resultOfCode(code))
	return resp, nil
}

// sendToken sends req with token tok and a fresh reader over body.
func (p *requestPath) sendToken(req *http.Request, o *outbound, body *replayBody, tok *tokenEntry) (*http.Response, *sniffBody, error) {
	o.sent.note(tok)
	if len(body.data) > 0 {
		return p.send(req, o, body.reader(), int64(len(body.data)), tok.Escaped())
	}
	if body.data != nil {
		return p.send(req, o, nil, 0, tok.Escaped()) // a reader over nothing would be two allocations wasted
	}
	return p.send(req, o, body.stream, body.length, tok.Escaped())
}

// send performs one round trip of a shallow copy of req with the request
// target from requestTarget (token pre-escaped): with p.opaque the whole
// target, path and query, goes in the copy's URL.Opaque, which net/http
// writes as it is (the path and a RawQuery would cost it a string to join
// them); else it is the query alone. The Host header is always the
// upstream's own: a client's Host is never passed on, so it cannot steer
// anything at WeChat's edge. It also returns an unused sniffBody for this
// response's sniff.
func (p *requestPath) send(req *http.Request, o *outbound, body io.ReadCloser, length int64, token string) (*http.Response, *sniffBody, error) {
	c := &requestCopy{req: *req, url: *req.URL} // the one allocation: see requestCopy
	line := ""
	if p.opaque {
		u := url.URL{Path: o.path}
		line = u.EscapedPath()
	}
	target := requestTarget(c.room[:0], line, req.URL.RawQuery, o.route, token, o.appid, o.secret, o.authorizer)
	out, u := &c.req, &c.url
	u.Path, u.RawPath = o.path, "" // the path the route was judged on
	u.Opaque, u.RawQuery, u.ForceQuery = "", target, false
	if p.opaque {
		u.Opaque, u.RawQuery = target, ""
	}
	out.URL = u
	out.Host = u.Host
	out.Header = upstreamHeader(req.Header, p.keepCallerAuth, o.dropHeader, o.identity)
	out.Body = body
	out.ContentLength = length
	if length == 0 {
		out.Body = nil // what reverse_proxy sends for no body; NoBody costs net/http a LimitReader
	}
	if refused := refusePlaceholder(out); refused != nil {
		return refused, nil, nil // never let a placeholder reach WeChat
	}
	resp, err := p.rt.RoundTrip(out)
	if err != nil {
		// A transport error can quote the URL, and with it the token.
		return nil, nil, redactErr(o.host, o.authorizer, err)
	}
	return resp, &c.body, nil
}

// unavailable answers a request for which no token could be had, with a
// JSON body in WeChat's own shape so that any client SDK can read it: 503
// for what passes (backoff, busy, quota, a deadline), 404 with 61003 for
// an unknown or revoked authorizer, else 502.
func (p *requestPath) unavailable(req *http.Request, o *outbound, err error) (*http.Response, error) {
	if errors.Is(err, context.Canceled) && req.Context().Err() != nil {
		return nil, err // the client went away; reverse_proxy logs a 499
	}
	o.host.request(o.authorizer, "token_unavailable")
	msg := o.host.redact(o.authorizer, credential.ClientText(err))
	if errors.Is(err, credential.ErrUnknownAuthorizer) || errors.Is(err, credential.ErrAuthorizerRevoked) {
		return gatewayError(req, http.StatusNotFound, 61003, "caddy-wechat: "+msg), nil
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
	return gatewayError(req, status, code, "caddy-wechat: no "+o.what+": "+msg), nil
}

// redactErr strips a transport's credentials from an error's text.
func redactErr(h pathHost, who string, err error) error {
	msg := err.Error()
	clean := h.redact(who, msg) // the secret, recent tokens, rids
	if clean == msg {
		return err // keep the error's type for reverse_proxy (dial errors fail over)
	}
	return errors.New(clean)
}
