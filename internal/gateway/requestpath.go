package gateway

// The one request loop of every transport: token → send → sniff →
// evidence → replay → confirm, then the scrub. The account transport
// (wechat) and the open platform's (wechat_component) differ only in the
// outbound they describe: which credential, which path, which route. So
// every rule of README "How it works" (header policy, encodings, rid/get
// on the path sent, evidence before a drop, body replay and reservation,
// error mapping, scrubbing) is written here once and holds on every path,
// the way golang.org/x/oauth2 writes Transport once over any TokenSource.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// Credential is what the loop needs of a source of credentials: the
// engine's *credential.Cache is one for every kind (account, WeCom agent,
// authorizer, component), as golang.org/x/oauth2's Transport needs only a
// TokenSource.
type Credential interface {
	// Token returns a usable token; warm, one atomic load.
	Token(ctx context.Context) (*credential.Token, error)
	// RejectedOn weighs a token errcode from the API path api (probe,
	// held token, ceiling) and says whether to replay, and with what.
	RejectedOn(ctx context.Context, t *credential.Token, api string) (fresh *credential.Token, replay bool, err error)
	// Confirm records that t answered a call: fresh evidence that it
	// works (one atomic load when nothing is held).
	Confirm(t *credential.Token)
}

// Host is the transport behind an outbound: its counters, the values no
// answer may carry, and the redaction of its errors. who is the
// authorizer a call names ("" for an account or the component).
type Host interface {
	Request(who, result string)
	Retry(who, outcome string)
	Needles(who string) *Needles
	Redact(who, s string) string
}

// Server is what the loop needs of the HTTP server it runs in, and only
// the server can give: a place to keep a drained request body for the
// server's own retry against the next upstream (so the retry sends the
// body again, not an empty one), and the read deadline of the request's
// connection. The root package gives Caddy's; nil keeps nothing and
// limits nothing.
type Server interface {
	KeptBody(ctx context.Context) ([]byte, bool)
	KeepBody(ctx context.Context, body []byte)
	LimitBodyIdle(req *http.Request, idle time.Duration)
}

// Path is the loop's settings, one per provisioned transport.
type Path struct {
	RT             http.RoundTripper // the embedded reverseproxy.HTTPTransport
	Server         Server
	Opaque         bool // the request target goes in URL.Opaque
	KeepCallerAuth bool // keep_caller_auth
	MaxReplay      int64
	MaxBuffered    int64 // max_buffered_bytes, for every transport of the process
	BodyIdle       time.Duration
}

// Outbound is one call as its transport decided it. It lives on the
// caller's stack.
type Outbound struct {
	Host  Host
	Path  string // canonical path sent upstream: every rule is judged on it
	Route Route
	Cred  Credential // token routes only
	What  string     // the credential's name in a client-facing error
	Sent  *TokenRing // tokens sent lately (the account's scrub), or nil

	// AppID and Secret: what login routes add (the account's); on the
	// component's SNS routes AppID is the component's, and Authorizer
	// the merchant's appid a call names.
	AppID, Secret, Authorizer string

	DropHeader string // a request header of the gateway's own, never sent
	Identity   bool   // ask for an unencoded answer: it is rewritten whole
	Refresh    bool   // the answer holds authorizer refresh tokens
}

// api is the API path the evidence is about, in one letter case: the
// path sent, lower-cased (no allocation for a lower-case path).
func (o *Outbound) api() string { return strings.ToLower(o.Path) }

// RoundTrip is the loop: the exchange, then the scrub, so that no answer
// reaching the client (or reverse_proxy's logs) carries a credential.
func (p *Path) RoundTrip(req *http.Request, o *Outbound) (*http.Response, error) {
	resp, err := p.exchange(req, o)
	if err != nil || resp == nil {
		return resp, err
	}
	if err := Scrub(o.Path, resp, o.Host.Needles(o.Authorizer)); err != nil {
		resp.Body.Close()
		o.Host.Request(o.Authorizer, "error")
		return nil, redactErr(o.Host, o.Authorizer, err)
	}
	if o.Refresh {
		return scrubRefreshTokens(resp)
	}
	return resp, nil
}

func (p *Path) exchange(req *http.Request, o *Outbound) (*http.Response, error) {
	if !o.Route.AddsToken() {
		// No token here: login calls get appid (and secret), and other
		// /sns calls carry the user's own OAuth token untouched.
		resp, _, err := p.send(req, o, req.Body, req.ContentLength, "")
		o.Host.Request(o.Authorizer, resultOf(resp, err))
		return resp, err
	}
	body, replayable, err := bufferBody(req, p.Server, p.MaxReplay, p.MaxBuffered, p.BodyIdle)
	if err != nil {
		return nil, err
	}
	if bodyHoldsPlaceholder(body.data) {
		o.Host.Request(o.Authorizer, "blocked")
		return ErrorResponse(req, http.StatusBadRequest, 40097, "caddy-wechat: the request body carries the gateway's placeholder token; it was not sent"), nil
	}
	tok, err := o.Cred.Token(req.Context())
	if err != nil {
		return p.unavailable(req, o, err)
	}
	resp, slot, err := p.sendToken(req, o, body, tok)
	if err != nil {
		o.Host.Request(o.Authorizer, "error")
		return nil, err
	}
	code, err := sniffInto(resp, slot)
	if err != nil {
		o.Host.Request(o.Authorizer, "error")
		return nil, redactErr(o.Host, o.Authorizer, err)
	}
	if !isTokenErrcode(code) {
		o.Cred.Confirm(tok) // fresh evidence that tok works (credential.Cache.Confirm)
		o.Host.Request(o.Authorizer, resultOfCode(code))
		return resp, nil
	}

	// WeChat rejected the token on this API path. The engine decides what
	// that evidence is worth (credential.Cache.RejectedOn: replaced
	// already, held, probed valid for this path, or really bad), and
	// whether to replay once with the same body. A body too large to
	// replay still counts as evidence, so that large uploads alone cannot
	// keep a dead token.
	fresh, replay, err := o.Cred.RejectedOn(req.Context(), tok, o.api())
	if !replayable {
		o.Host.Retry(o.Authorizer, "not_replayable")
		o.Host.Request(o.Authorizer, "token_error")
		return resp, nil
	}
	if err != nil || !replay {
		// No better token: the client gets WeChat's own answer.
		o.Host.Retry(o.Authorizer, "no_fresh_token")
		o.Host.Request(o.Authorizer, "token_error")
		return resp, nil
	}
	resp.Body.Close()
	resp, slot, err = p.sendToken(req, o, body, fresh)
	if err != nil {
		o.Host.Retry(o.Authorizer, "error")
		o.Host.Request(o.Authorizer, "error")
		return nil, err
	}
	code, err = sniffInto(resp, slot)
	if err != nil {
		o.Host.Retry(o.Authorizer, "error")
		o.Host.Request(o.Authorizer, "error")
		return nil, redactErr(o.Host, o.Authorizer, err)
	}
	if isTokenErrcode(code) {
		o.Host.Retry(o.Authorizer, "failed")
		o.Host.Request(o.Authorizer, "token_error")
		return resp, nil
	}
	// The fresh token answered: if it fails later, that is a revocation
	// to repair at once, not a glitch to sit out (credential.Cache.Confirm).
	o.Cred.Confirm(fresh)
	o.Host.Retry(o.Authorizer, "ok")
	o.Host.Request(o.Authorizer, resultOfCode(code))
	return resp, nil
}

// sendToken sends req with token tok and a fresh reader over body.
func (p *Path) sendToken(req *http.Request, o *Outbound, body *replayBody, tok *credential.Token) (*http.Response, *sniffBody, error) {
	o.Sent.Note(tok)
	if len(body.data) > 0 {
		return p.send(req, o, body.reader(), int64(len(body.data)), tok.Escaped())
	}
	if body.data != nil {
		return p.send(req, o, nil, 0, tok.Escaped()) // a reader over nothing would be two allocations wasted
	}
	return p.send(req, o, body.stream, body.length, tok.Escaped())
}

// send performs one round trip of a shallow copy of req with the request
// target from requestTarget (token pre-escaped): with p.Opaque the whole
// target, path and query, goes in the copy's URL.Opaque, which net/http
// writes as it is (the path and a RawQuery would cost it a string to join
// them); else it is the query alone. The Host header is always the
// upstream's own: a client's Host is never passed on, so it cannot steer
// anything at WeChat's edge. It also returns an unused sniffBody for this
// response's sniff.
func (p *Path) send(req *http.Request, o *Outbound, body io.ReadCloser, length int64, token string) (*http.Response, *sniffBody, error) {
	c := &requestCopy{req: *req, url: *req.URL} // the one allocation: see requestCopy
	line := ""
	if p.Opaque {
		u := url.URL{Path: o.Path}
		line = u.EscapedPath()
	}
	target := requestTarget(c.room[:0], line, req.URL.RawQuery, o.Route, token, o.AppID, o.Secret, o.Authorizer)
	out, u := &c.req, &c.url
	u.Path, u.RawPath = o.Path, "" // the path the route was judged on
	u.Opaque, u.RawQuery, u.ForceQuery = "", target, false
	if p.Opaque {
		u.Opaque, u.RawQuery = target, ""
	}
	out.URL = u
	out.Host = u.Host
	out.Header = upstreamHeader(req.Header, p.KeepCallerAuth, o.DropHeader, o.Identity)
	out.Body = body
	out.ContentLength = length
	if length == 0 {
		out.Body = nil // what reverse_proxy sends for no body; NoBody costs net/http a LimitReader
	}
	if refused := refusePlaceholder(out); refused != nil {
		return refused, nil, nil // never let a placeholder reach WeChat
	}
	resp, err := p.RT.RoundTrip(out)
	if err != nil {
		// A transport error can quote the URL, and with it the token.
		return nil, nil, redactErr(o.Host, o.Authorizer, err)
	}
	return resp, &c.body, nil
}

// unavailable answers a request for which no token could be had, with a
// JSON body in WeChat's own shape so that any client SDK can read it: 503
// for what passes (backoff, busy, quota, a deadline), 404 with 61003 for
// an unknown or revoked authorizer, else 502.
func (p *Path) unavailable(req *http.Request, o *Outbound, err error) (*http.Response, error) {
	if errors.Is(err, context.Canceled) && req.Context().Err() != nil {
		return nil, err // the client went away; reverse_proxy logs a 499
	}
	o.Host.Request(o.Authorizer, "token_unavailable")
	msg := o.Host.Redact(o.Authorizer, credential.ClientText(err))
	if errors.Is(err, credential.ErrUnknownAuthorizer) || errors.Is(err, credential.ErrAuthorizerRevoked) {
		return ErrorResponse(req, http.StatusNotFound, 61003, "caddy-wechat: "+msg), nil
	}
	status, code := http.StatusBadGateway, -1
	var we *credential.APIError
	if errors.As(err, &we) {
		code = we.Code
	}
	var be *credential.BackoffError
	if errors.As(err, &be) || code == -1 || code == 45009 || code == 45011 || errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusServiceUnavailable
	}
	return ErrorResponse(req, status, code, "caddy-wechat: no "+o.What+": "+msg), nil
}

// redactErr strips a transport's credentials from an error's text.
func redactErr(h Host, who string, err error) error {
	msg := err.Error()
	clean := h.Redact(who, msg) // the secret, recent tokens, rids
	if clean == msg {
		return err // keep the error's type for reverse_proxy (dial errors fail over)
	}
	return errors.New(clean)
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
