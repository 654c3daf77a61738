package wechat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"unsafe"

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

// RoundTrip sends one proxied call with the credential it needs, and
// scrubs the answer as the account transport does: rid/get field by
// field, and the platform's secret, its component tokens and the named
// authorizer's tokens wherever they appear in headers or text.
func (t *ComponentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.roundTrip(req)
	if err != nil || resp == nil {
		return resp, err
	}
	if err := scrubAnswer(req, resp, t.needles(req)); err != nil {
		resp.Body.Close()
		t.count("error", false)
		return nil, t.redact(err)
	}
	return resp, nil
}

// needles are the values no answer may carry: the platform's secret, its
// recent component tokens, and the recent tokens of the authorizer the
// call names (only that one: scanning for all of ten thousand would put
// the registry on every answer's path).
func (t *ComponentTransport) needles(req *http.Request) *needleSet {
	vals := append(t.p.comp.Recent(), t.p.plat.Secret)
	if appid, _, named := authorizerOf(req); named {
		if a := t.p.reg.Lookup(appid); a != nil {
			vals = append(vals, a.Cache().Recent()...)
		}
	}
	ns := newNeedleSet(vals...)
	ns.hits = t.p.obs.scrub
	return ns
}

func (t *ComponentTransport) roundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodConnect {
		return gatewayError(req, http.StatusMethodNotAllowed, 43002, "caddy-wechat: CONNECT is not allowed"), nil
	}
	appid, p, named := authorizerOf(req)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	clean := strings.ToLower(path.Clean(p)) // no allocation for a clean, lower-case path
	if classify(clean) == routeBlocked || componentBlocked(clean) {
		t.count("blocked", named)
		return gatewayError(req, http.StatusForbidden, 40002,
			"caddy-wechat: this endpoint is the gateway's own; call the API you need without a token"), nil
	}
	componentCall := strings.HasPrefix(clean, "/cgi-bin/component/") || strings.HasPrefix(clean, "/sns/component/")
	if strings.HasPrefix(clean, "/sns/") && !componentCall {
		// The user's own OAuth token (/sns/userinfo, /sns/auth): untouched.
		resp, err := t.send(req, p, "", streamOf(req), nil)
		t.count(resultOf(resp, err), named)
		return resp, err
	}
	if !named && !componentCall {
		t.count("no_authorizer", false)
		return gatewayError(req, http.StatusBadRequest, 41001,
			"caddy-wechat: name the authorizer with the "+AuthorizerHeader+" header or a /authorizer/{appid}/ path prefix"), nil
	}
	body, replayable, err := bufferBody(req, t.maxReplay(), defaultMaxBuffered, defaultBodyReadTimeout)
	if err != nil {
		return nil, err
	}
	var cache *credential.Cache
	var tok *credential.Token
	param := "access_token"
	if componentCall && !named {
		param = "component_access_token"
		cache = t.p.comp
		tok, err = cache.Token(req.Context())
	} else {
		var a *credential.Authorizer
		tok, a, err = t.p.reg.Token(req.Context(), appid)
		if a != nil {
			cache = a.Cache()
		}
	}
	if err != nil {
		return t.unavailable(req, named, err)
	}
	resp, err := t.send(req, p, param, body, tok)
	if err != nil {
		t.count("error", named)
		return nil, err
	}
	code, err := sniff(resp)
	if err != nil {
		t.count("error", named)
		return nil, t.redact(err)
	}
	if isTokenErrcode(code) {
		// As on the account transport: the evidence reaches the engine even
		// when the body is too large to replay, so a bad token is replaced
		// for the next call; a replacement that answers is confirmed.
		fresh, replay, rerr := cache.Rejected(req.Context(), tok)
		if rerr == nil && replay && replayable {
			resp.Body.Close()
			if resp, err = t.send(req, p, param, body, fresh); err != nil {
				t.count("error", named)
				return nil, err
			}
			if code, err = sniff(resp); err != nil {
				t.count("error", named)
				return nil, t.redact(err)
			}
			if !isTokenErrcode(code) {
				cache.Confirm(fresh)
			}
		}
	}
	switch {
	case isTokenErrcode(code):
		t.count("token_error", named)
	case code != 0:
		t.count("wechat_error", named)
	default:
		t.count("ok", named)
	}
	if clean == "/cgi-bin/component/api_get_authorizer_info" || clean == "/cgi-bin/component/api_get_authorizer_list" {
		return scrubRefreshTokens(resp)
	}
	return resp, nil
}

func (t *ComponentTransport) count(result string, authorizer bool) {
	kind := "component"
	if authorizer {
		kind = "authorizer"
	}
	metricCompRequests.WithLabelValues(t.p.appid, kind, result).Inc()
}

func (t *ComponentTransport) maxReplay() int64 {
	if t.MaxReplayBody > 0 {
		return t.MaxReplayBody
	}
	return defaultMaxReplayBody
}

// unavailable answers a call no token could be had for, in WeChat's
// shape. An unknown or revoked authorizer is 61003 with 404.
func (t *ComponentTransport) unavailable(req *http.Request, named bool, err error) (*http.Response, error) {
	if errors.Is(err, context.Canceled) && req.Context().Err() != nil {
		return nil, err
	}
	t.count("token_unavailable", named)
	if errors.Is(err, credential.ErrUnknownAuthorizer) || errors.Is(err, credential.ErrAuthorizerRevoked) {
		return gatewayError(req, http.StatusNotFound, 61003, "caddy-wechat: "+credential.ClientText(err)), nil
	}
	status, code := http.StatusBadGateway, -1
	var ae *credential.APIError
	if errors.As(err, &ae) {
		code = ae.Code
	}
	var be *credential.BackoffError
	if errors.As(err, &be) || code == -1 || errors.Is(err, context.DeadlineExceeded) {
		status = http.StatusServiceUnavailable
	}
	what := "component_access_token"
	if named {
		what = "authorizer_access_token"
	}
	return gatewayError(req, status, code, "caddy-wechat: no "+what+": "+t.scrub(credential.ClientText(err))), nil
}

// send performs one round trip with the path p, the client's credentials
// dropped, param=tok added, and the authorizer header removed.
func (t *ComponentTransport) send(req *http.Request, p, param string, body *replayBody, tok *credential.Token) (*http.Response, error) {
	c := &componentCopy{req: *req, url: *req.URL}
	out, u := &c.req, &c.url
	u.Path, u.RawPath = p, ""
	if tok != nil {
		u.RawQuery = componentQuery(c.room[:0], req.URL.RawQuery, param, tok.Escaped())
	}
	u.ForceQuery = false
	out.URL = u
	out.Host = u.Host
	// The caller's header map is kept intact: reverse_proxy sends the same
	// request again on a retry, and it must still name the authorizer.
	scrub := strings.Contains(p, "api_get_authorizer_")
	if _, ok := req.Header[AuthorizerHeader]; ok || scrub {
		out.Header = req.Header.Clone()
		out.Header.Del(AuthorizerHeader)
		if scrub {
			out.Header.Del("Accept-Encoding") // scrubbed below: plain text
		}
	}
	switch {
	case len(body.data) > 0:
		out.Body, out.ContentLength = body.reader(), int64(len(body.data))
	case body.data != nil:
		out.Body, out.ContentLength = http.NoBody, 0
	default:
		out.Body, out.ContentLength = body.stream, body.length
		if out.ContentLength == 0 {
			out.Body = http.NoBody
		}
	}
	resp, err := t.HTTPTransport.RoundTrip(out)
	if err != nil {
		return nil, t.redact(err)
	}
	return resp, nil
}

// streamOf sends the request body once, as it came.
func streamOf(req *http.Request) *replayBody {
	if req.Body == nil || req.Body == http.NoBody {
		return emptyBody
	}
	return &replayBody{stream: req.Body, length: req.ContentLength}
}

// componentCopy is, in one allocation, the shallow copies of a request
// and its URL that send hands upstream and room for the query with the
// token (as requestCopy is for the wechat transport). It is never reused:
// the query string aliases room.
type componentCopy struct {
	req  http.Request
	url  url.URL
	room [componentRoom]byte
}

// componentRoom holds a query with an authorizer_access_token (about 140
// bytes); a longer query costs one allocation of its own.
const componentRoom = 256

// componentQuery drops every credential a client sent (access_token,
// component_access_token, secret, in any case or escaping) and adds
// param=tok (tok pre-escaped). It is built in dst when dst has room, as
// requestTarget is; the string aliases those bytes.
func componentQuery(dst []byte, raw, param, tok string) string {
	b := dst[:0]
	if n := len(raw) + len(param) + len(tok) + 2; cap(b) < n {
		b = make([]byte, 0, n)
	}
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		key, _, _ := strings.Cut(part, "=")
		if k, err := url.QueryUnescape(key); err == nil {
			key = k
		} else {
			key = strings.ReplaceAll(key, "%", "")
		}
		key = strings.ToLower(strings.TrimSpace(key))
		if key == "access_token" || key == "component_access_token" || key == "secret" || key == "component_appsecret" {
			continue
		}
		b = append(b, part...)
		b = append(b, '&')
	}
	b = append(b, param...)
	b = append(b, '=')
	b = append(b, tok...)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// redact strips the component's recent tokens from an error text.
func (t *ComponentTransport) redact(err error) error {
	msg := err.Error()
	if clean := t.scrub(msg); clean != msg {
		return errors.New(clean)
	}
	return err
}

func (t *ComponentTransport) scrub(msg string) string {
	for _, v := range t.p.comp.Recent() {
		if v != "" {
			msg = strings.ReplaceAll(msg, v, "[token]")
			msg = strings.ReplaceAll(msg, url.QueryEscape(v), "[token]")
		}
	}
	return credential.StripRID(msg)
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
