package component

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddy-wechat/wechat/caddykit"
	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(ComponentTransport{})
}

// AuthorizerHeader names the authorizer a call is made for. It is
// removed before the request goes upstream.
const AuthorizerHeader = "Wechat-Authorizer-Appid"

// authorizerPrefix is the path form: /authorizer/{appid}/cgi-bin/...
const authorizerPrefix = "/authorizer/"

// ComponentTransport is the reverse_proxy transport "wechat_component":
// calls on behalf of an authorizer get that authorizer's access_token,
// calls under /cgi-bin/component/ get the component_access_token. The
// directive wechat_component expands into reverse_proxy with it.
type ComponentTransport struct {
	reverseproxy.HTTPTransport
	ComponentConfig

	// Largest request body kept for the one replay. Default 10 MiB.
	MaxReplayBody int64 `json:"max_replay_body,omitempty"`

	// Pass the caller's Authorization, Proxy-Authorization and Cookie
	// headers on to WeChat. Off by default: they are the caller's (the
	// README's basic_auth guard, say), and WeChat has no use for them.
	KeepCallerAuth bool `json:"keep_caller_auth,omitempty"`

	p       *platform
	poolKey string
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (ComponentTransport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.wechat_component",
		New: func() caddy.Module { return new(ComponentTransport) },
	}
}

// Provision attaches to the component's platform.
func (t *ComponentTransport) Provision(ctx caddy.Context) error {
	t.logger = ctx.Logger()
	bases, err := gateway.ParseUpstreams(t.TokenEndpoints)
	if err != nil {
		return err
	}
	if bases[0].Scheme == "https" && t.TLS == nil {
		t.TLS = new(reverseproxy.TLSConfig)
	}
	if err := t.HTTPTransport.Provision(ctx); err != nil {
		return fmt.Errorf("wechat component: %v", err)
	}
	t.p, t.poolKey, err = t.acquire(ctx)
	return err
}

// Cleanup releases the platform; the last config to let go closes it.
func (t *ComponentTransport) Cleanup() error {
	if t.poolKey != "" {
		if _, err := platforms.Delete(t.poolKey); err != nil {
			return err
		}
	}
	return t.HTTPTransport.Cleanup()
}

// authorizerOf returns the authorizer a request names, by header or by
// path prefix, and the WeChat path to call.
func authorizerOf(req *http.Request) (appid, p string, ok bool) {
	p = req.URL.Path
	if rest, found := strings.CutPrefix(p, authorizerPrefix); found {
		id, _, _ := strings.Cut(rest, "/")
		if p = rest[len(id):]; p == "" {
			p = "/"
		}
		return id, p, true // p still starts with "/": no allocation
	}
	if h := req.Header.Get(AuthorizerHeader); h != "" {
		return h, p, true
	}
	return "", p, false
}

// RoundTrip sends one proxied call with the credential it needs through
// the one request loop (requestPath), so every rule of the account
// transport holds here too: header policy, encodings, rid/get on the path
// sent, evidence before a drop, replay, error mapping and the scrub of the
// platform's secret, its component tokens and the named authorizer's.
func (t *ComponentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodConnect {
		t.count("", "blocked")
		return gateway.ErrorResponse(req, http.StatusMethodNotAllowed, 43002, "caddy-wechat: CONNECT is not allowed"), nil
	}
	appid, p, named := authorizerOf(req)
	p = gateway.CanonicalPath(p)
	clean := strings.ToLower(p) // no allocation for a lower-case path
	r := gateway.ComponentRoute(clean, named)
	o := gateway.Outbound{Host: (*componentHost)(t), Path: p, Route: r, What: "component_access_token", AppID: t.p.appid,
		DropHeader: AuthorizerHeader, Refresh: clean == "/cgi-bin/component/api_get_authorizer_info" || clean == "/cgi-bin/component/api_get_authorizer_list"}
	o.Identity = o.Refresh
	if named {
		o.Authorizer = appid
	}
	switch r {
	case gateway.RouteBlocked:
		t.count(o.Authorizer, "blocked")
		return gateway.ErrorResponse(req, http.StatusForbidden, 40002,
			"caddy-wechat: this endpoint is the gateway's own; call the API you need without a token"), nil
	case gateway.RouteNone:
		t.count("", "no_authorizer")
		return gateway.ErrorResponse(req, http.StatusBadRequest, 41001,
			"caddy-wechat: name the authorizer with the "+AuthorizerHeader+" header or a /authorizer/{appid}/ path prefix"), nil
	case gateway.RouteToken:
		o.What = "authorizer_access_token"
		if a := t.p.reg.Lookup(appid); a != nil {
			o.Cred = a // a pointer: no allocation
		} else {
			o.Cred = authorizerCred{t.p.reg, appid} // first use: created from the store
		}
	default:
		o.Cred = t.p.comp
	}
	rp := gateway.Path{RT: &t.HTTPTransport, Server: caddykit.Server{}, KeepCallerAuth: t.KeepCallerAuth,
		MaxReplay: t.maxReplay(), MaxBuffered: gateway.DefaultMaxBuffered, BodyIdle: gateway.DefaultBodyReadTimeout}
	return rp.RoundTrip(req, &o)
}

// authorizerCred is an authorizer not yet in the registry as the loop's
// credential: its token comes through the registry (created from its
// stored refresh token, forgotten on 61003), and the evidence goes to its
// cache.
type authorizerCred struct {
	reg   *credential.Registry
	appid string
}

func (a authorizerCred) Token(ctx context.Context) (*credential.Token, error) {
	tok, _, err := a.reg.Token(ctx, a.appid)
	return tok, err
}

func (a authorizerCred) RejectedOn(ctx context.Context, tok *credential.Token, api string) (*credential.Token, bool, error) {
	au := a.reg.Lookup(a.appid)
	if au == nil {
		return nil, false, credential.ErrUnknownAuthorizer
	}
	return au.RejectedOn(ctx, tok, api)
}

func (a authorizerCred) Confirm(tok *credential.Token) {
	if au := a.reg.Lookup(a.appid); au != nil {
		au.Confirm(tok)
	}
}

// componentHost is the open platform's transport as the loop's
// gateway.Host (a type of its own keeps these methods off
// ComponentTransport's exported API).
type componentHost ComponentTransport

func (h *componentHost) Request(who, result string) { (*ComponentTransport)(h).count(who, result) }
func (h *componentHost) Retry(string, string)       {}

func (t *ComponentTransport) count(who, result string) {
	kind := "component"
	if who != "" {
		kind = "authorizer"
	}
	metricCompRequests.WithLabelValues(t.p.appid, kind, result).Inc()
}

// needles are the values no answer may carry: the platform's secret, its
// recent component tokens, and the recent tokens of the authorizer the
// call names (only that one: scanning for all of ten thousand would put
// the registry on every answer's path). The set is kept with the
// authorizer and rebuilt only when its token or the component's changes,
// so a warm call builds nothing.
func (h *componentHost) Needles(who string) *gateway.Needles {
	t := (*ComponentTransport)(h)
	key := gateway.NeedleKey{Component: t.p.comp.Current()}
	if who != "" {
		if a := t.p.reg.Lookup(who); a != nil {
			key.Token = a.Cache().Current()
			if ns, _ := a.Memo().(*gateway.Needles); ns != nil && ns.Key() == key {
				return ns
			}
			ns := gateway.NewNeedles(key, t.p.obs.scrub, append(append(t.p.comp.Recent(), t.p.plat.Secret), a.Cache().Recent()...)...)
			a.SetMemo(ns)
			return ns
		}
	}
	if ns := t.p.needles.Load(); ns != nil && ns.Key() == key {
		return ns
	}
	ns := gateway.NewNeedles(key, t.p.obs.scrub, append(t.p.comp.Recent(), t.p.plat.Secret)...)
	t.p.needles.Store(ns)
	return ns
}

func (t *ComponentTransport) maxReplay() int64 {
	if t.MaxReplayBody > 0 {
		return t.MaxReplayBody
	}
	return caddykit.DefaultMaxReplayBody
}

// redact strips the platform's secret, its recent component tokens, the
// named authorizer's recent tokens and WeChat's rids from a text (a
// transport error quotes the URL, and with it the token).
func (h *componentHost) Redact(who, msg string) string {
	t := (*ComponentTransport)(h)
	vals := append(t.p.comp.Recent(), t.p.plat.Secret)
	if who != "" {
		if a := t.p.reg.Lookup(who); a != nil {
			vals = append(vals, a.Cache().Recent()...)
		}
	}
	for _, v := range vals {
		if len(v) >= gateway.MinNeedle {
			msg = strings.ReplaceAll(msg, v, "[token]")
			msg = strings.ReplaceAll(msg, url.QueryEscape(v), "[token]")
		}
	}
	return gateway.StripRIDs(credential.StripRID(msg))
}

// Interface guards
var (
	_ caddy.Provisioner  = (*ComponentTransport)(nil)
	_ caddy.CleanerUpper = (*ComponentTransport)(nil)
	_ http.RoundTripper  = (*ComponentTransport)(nil)
)
