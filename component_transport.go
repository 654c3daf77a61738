package wechat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/caddy-wechat/wechat/internal/credential"
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
	bases, err := parseUpstreams(t.TokenEndpoints)
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

// componentBlocked are the component endpoints the gateway owns: calling
// them with its component token would fetch or rotate credentials behind
// its back (a rotated refresh token the gateway never sees is a merchant
// lost).
func componentBlocked(clean string) bool {
	switch clean {
	case "/cgi-bin/component/api_component_token", "/cgi-bin/component/api_authorizer_token", "/cgi-bin/component/api_query_auth":
		return true
	}
	return false
}

// componentRoute is the route of a call on the open platform, from its
// cleaned, lower-cased path and whether it names an authorizer.
func componentRoute(clean string, named bool) route {
	switch {
	case classify(clean) == routeBlocked || componentBlocked(clean):
		return routeBlocked
	case strings.HasPrefix(clean, "/sns/component/") || strings.HasPrefix(clean, "/sns/oauth2/component/"):
		// Login and web OAuth on behalf of an authorizer: the component
		// vouches with its appid and token.
		if named {
			return routeComponentSNSNamed
		}
		return routeComponentSNS
	case strings.HasPrefix(clean, "/sns/"):
		return routeUserSNS // the user's own OAuth token: untouched
	case named:
		return routeToken // the authorizer's access_token
	case strings.HasPrefix(clean, "/cgi-bin/component/"):
		return routeComponent
	}
	return routeNone
}

// RoundTrip sends one proxied call with the credential it needs through
// the one request loop (requestPath), so every rule of the account
// transport holds here too: header policy, encodings, rid/get on the path
// sent, evidence before a drop, replay, error mapping and the scrub of the
// platform's secret, its component tokens and the named authorizer's.
func (t *ComponentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodConnect {
		t.count("", "blocked")
		return gatewayError(req, http.StatusMethodNotAllowed, 43002, "caddy-wechat: CONNECT is not allowed"), nil
	}
	appid, p, named := authorizerOf(req)
	p = canonicalPath(p)
	clean := strings.ToLower(p) // no allocation for a lower-case path
	r := componentRoute(clean, named)
	o := outbound{host: t, path: p, route: r, what: "component_access_token", appid: t.p.appid,
		dropHeader: AuthorizerHeader, refresh: clean == "/cgi-bin/component/api_get_authorizer_info" || clean == "/cgi-bin/component/api_get_authorizer_list"}
	o.identity = o.refresh
	if named {
		o.authorizer = appid
	}
	switch r {
	case routeBlocked:
		t.count(o.authorizer, "blocked")
		return gatewayError(req, http.StatusForbidden, 40002,
			"caddy-wechat: this endpoint is the gateway's own; call the API you need without a token"), nil
	case routeNone:
		t.count("", "no_authorizer")
		return gatewayError(req, http.StatusBadRequest, 41001,
			"caddy-wechat: name the authorizer with the "+AuthorizerHeader+" header or a /authorizer/{appid}/ path prefix"), nil
	case routeToken:
		o.what = "authorizer_access_token"
		if a := t.p.reg.Lookup(appid); a != nil {
			o.cred = a // a pointer: no allocation
		} else {
			o.cred = authorizerCred{t.p.reg, appid} // first use: created from the store
		}
	default:
		o.cred = t.p.comp
	}
	rp := requestPath{rt: &t.HTTPTransport, keepCallerAuth: t.KeepCallerAuth,
		maxReplay: t.maxReplay(), maxBuffered: defaultMaxBuffered, bodyIdle: defaultBodyReadTimeout}
	return rp.roundTrip(req, &o)
}

// authorizerCred is an authorizer not yet in the registry as the loop's
// credential: its token comes through the registry (created from its
// stored refresh token, forgotten on 61003), and the evidence goes to its
// cache.
type authorizerCred struct {
	reg   *credential.Registry
	appid string
}

func (a authorizerCred) Token(ctx context.Context) (*tokenEntry, error) {
	tok, _, err := a.reg.Token(ctx, a.appid)
	return tok, err
}

func (a authorizerCred) RejectedOn(ctx context.Context, tok *tokenEntry, api string) (*tokenEntry, bool, error) {
	au := a.reg.Lookup(a.appid)
	if au == nil {
		return nil, false, credential.ErrUnknownAuthorizer
	}
	return au.RejectedOn(ctx, tok, api)
}

func (a authorizerCred) Confirm(tok *tokenEntry) {
	if au := a.reg.Lookup(a.appid); au != nil {
		au.Confirm(tok)
	}
}

// pathHost of the open platform.
func (t *ComponentTransport) request(who, result string) { t.count(who, result) }
func (t *ComponentTransport) retry(string, string)       {}

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
func (t *ComponentTransport) needles(who string) *needleSet {
	comp := t.p.comp.Current()
	if who != "" {
		if a := t.p.reg.Lookup(who); a != nil {
			cur := a.Cache().Current()
			if ns, _ := a.Memo().(*needleSet); ns != nil && ns.cur == cur && ns.comp == comp {
				return ns
			}
			ns := newNeedleSet(append(append(t.p.comp.Recent(), t.p.plat.Secret), a.Cache().Recent()...)...)
			ns.cur, ns.comp, ns.hits = cur, comp, t.p.obs.scrub
			a.SetMemo(ns)
			return ns
		}
	}
	if ns := t.p.needles.Load(); ns != nil && ns.comp == comp {
		return ns
	}
	ns := newNeedleSet(append(t.p.comp.Recent(), t.p.plat.Secret)...)
	ns.comp, ns.hits = comp, t.p.obs.scrub
	t.p.needles.Store(ns)
	return ns
}

func (t *ComponentTransport) maxReplay() int64 {
	if t.MaxReplayBody > 0 {
		return t.MaxReplayBody
	}
	return defaultMaxReplayBody
}

// redact strips the platform's secret, its recent component tokens, the
// named authorizer's recent tokens and WeChat's rids from a text (a
// transport error quotes the URL, and with it the token).
func (t *ComponentTransport) redact(who, msg string) string {
	vals := append(t.p.comp.Recent(), t.p.plat.Secret)
	if who != "" {
		if a := t.p.reg.Lookup(who); a != nil {
			vals = append(vals, a.Cache().Recent()...)
		}
	}
	for _, v := range vals {
		if len(v) >= minNeedle {
			msg = strings.ReplaceAll(msg, v, "[token]")
			msg = strings.ReplaceAll(msg, url.QueryEscape(v), "[token]")
		}
	}
	return ridPattern.ReplaceAllString(credential.StripRID(msg), "")
}

// refreshField matches a refresh token in an answer.
var refreshField = regexp.MustCompile(`"(authorizer_refresh_token|refresh_token)"\s*:\s*"(?:[^"\\]|\\.)*"`)

// scrubRefreshTokens removes refresh tokens from api_get_authorizer_info
// and _list answers: the gateway holds them, no client needs them, and a
// client that used one would rotate it behind the gateway's back.
func scrubRefreshTokens(resp *http.Response) (*http.Response, error) {
	if resp.Header.Get("Content-Encoding") != "" {
		resp.Body.Close()
		return nil, errors.New("caddy-wechat: an encoded api_get_authorizer answer cannot be scrubbed")
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	b = refreshField.ReplaceAll(b, []byte(`"$1":""`))
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	return resp, nil
}

// Interface guards
var (
	_ caddy.Provisioner  = (*ComponentTransport)(nil)
	_ caddy.CleanerUpper = (*ComponentTransport)(nil)
	_ http.RoundTripper  = (*ComponentTransport)(nil)
)
