package wechat

// The wechat transport's request path: what the account adds to one
// proxied call. The loop itself (token, send, sniff, evidence, replay,
// scrub) is internal/gateway's, shared with the open platform.

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/caddy-wechat/wechat/caddykit"
	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/caddyserver/caddy/v2"
)

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
		return gateway.ErrorResponse(req, http.StatusMethodNotAllowed, 43002, "caddy-wechat: CONNECT is not allowed"), nil
	}
	o := gateway.Outbound{Host: (*accountHost)(t), Path: gateway.CanonicalPath(req.URL.Path), Route: gateway.ClassifyRequest(req.URL.Path, req.URL.RawQuery),
		Cred: t.acct.tokens, What: "access_token", Sent: t.sent, AppID: t.acct.appid, Secret: t.secret}
	if o.Route == gateway.RouteBlocked {
		if t.sdkTokens() {
			t.metrics.request("placeholder")
			return gateway.PlaceholderToken(req), nil
		}
		t.metrics.request("blocked")
		return gateway.ErrorResponse(req, http.StatusForbidden, 40002,
			"caddy-wechat: the token endpoints are the gateway's own; call the API you need without a token"), nil
	}
	if o.Route.AddsToken() {
		t.checkHost(req.URL.Host)
	}
	p := t.requestPath()
	return p.RoundTrip(req, &o)
}

// requestPath is the loop's settings for this transport (built on the
// stack: a few field reads).
func (t *Transport) requestPath() gateway.Path {
	return gateway.Path{RT: &t.HTTPTransport, Server: caddykit.Server{}, Opaque: t.opaque, KeepCallerAuth: t.KeepCallerAuth,
		MaxReplay: t.maxReplay(), MaxBuffered: t.maxBuffered(), BodyIdle: t.bodyReadTimeout()}
}

// accountHost is the account transport as the loop's gateway.Host: its
// metrics (who is always ""), its scrub set and its redaction. A type of
// its own keeps these methods off Transport's exported API.
type accountHost Transport

func (h *accountHost) Request(_, result string)  { h.metrics.request(result) }
func (h *accountHost) Retry(_, outcome string)   { h.metrics.retry(outcome) }
func (h *accountHost) Redact(_, s string) string { return h.acct.redact(s) }

// Needles are the values no answer may carry: the account's recent
// tokens, those this transport sent lately, and its secret. The set is
// rebuilt only when the current token or the ring changes.
func (h *accountHost) Needles(string) *gateway.Needles {
	t := (*Transport)(h)
	var key gateway.NeedleKey
	if t.acct != nil {
		key.Token = t.acct.tokens.Current()
	}
	key.Gen = t.sent.Gen()
	if t.needleCache != nil {
		if ns := t.needleCache.Load(); ns != nil && ns.Key() == key {
			return ns
		}
	}
	ns := gateway.NewNeedles(key, t.scrubHits, append(t.recentTokens(nil), t.secret)...)
	if t.needleCache != nil {
		t.needleCache.Store(ns)
	}
	return ns
}

// recentTokens is the provider of tokens to scrub: the engine's recent
// tokens (current included) and those this transport sent lately.
func (t *Transport) recentTokens(dst []string) []string {
	if t.recent != nil {
		return t.recent(dst)
	}
	if t.acct != nil {
		// The engine's list: every token the cache held lately,
		// including ones fetched but not yet sent by this transport.
		dst = append(dst, t.acct.tokens.Recent()...)
	}
	return t.sent.AppendTo(dst)
}

func (t *Transport) maxBuffered() int64 {
	if t.MaxBufferedBytes > 0 {
		return t.MaxBufferedBytes
	}
	return gateway.DefaultMaxBuffered
}

func (t *Transport) bodyReadTimeout() time.Duration {
	if t.BodyReadTimeout > 0 {
		return time.Duration(t.BodyReadTimeout)
	}
	return gateway.DefaultBodyReadTimeout
}

// provisionRequestPath sets up what the request path needs beyond the
// token: the ring of sent tokens and the cache of values to scrub.
func (t *Transport) provisionRequestPath(caddy.Context) {
	t.sent = new(gateway.TokenRing)
	t.needleCache = new(atomic.Pointer[gateway.Needles])
}

// sdkTokens reports whether the token endpoints answer with the
// placeholder (the default) rather than 403.
func (t *Transport) sdkTokens() bool {
	return t.SDKTokenEndpoints == nil || *t.SDKTokenEndpoints
}

// PlaceholderPrefix starts every placeholder token the gateway hands out
// in SDK mode; the same in every process, so any instance of a cluster
// recognizes a placeholder another issued.
const PlaceholderPrefix = gateway.PlaceholderPrefix
