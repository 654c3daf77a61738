package wechat

// The wechat_jssdk HTTP handler: JS-SDK signatures from the account's
// cached tickets, and (opt-in) the raw token for trusted callers.

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(JSSDK{})
	httpcaddyfile.RegisterHandlerDirective("wechat_jssdk", parseJSSDK)
	// Ahead of wechat (which sits just before reverse_proxy), so a site
	// needs no `order` option; only standard directives can be anchors.
	httpcaddyfile.RegisterDirectiveOrder("wechat_jssdk", httpcaddyfile.After, "respond")
}

// JSSDK is the handler wechat_jssdk: it answers wx.config signatures (or,
// opt-in, the raw access_token) for an account. It provisions a Transport
// only to attach to the account, so it shares the token, refresher and
// backoff of a `wechat` directive with the same appid, secret, token_api
// and memcache: one token per account however many handlers use it.
type JSSDK struct {
	// The account, with the same fields as the wechat transport.
	Account *Transport `json:"account,omitempty"`

	// RawToken makes this handler serve {"access_token","expires_in"}
	// instead of signatures, for services that cannot go through the
	// gateway. Off by default; guard the route (basic_auth, remote_ip).
	RawToken bool `json:"raw_token,omitempty"`

	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (JSSDK) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.wechat_jssdk", New: func() caddy.Module { return new(JSSDK) }}
}

// Ticket types: the JS-SDK ticket and the card api_ticket.
var ticketTypes = []string{"jsapi", "wx_card"}

// Provision attaches to the account and to its ticket caches.
func (h *JSSDK) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Account == nil {
		return errors.New("appid and secret are required")
	}
	if err := h.Account.Provision(ctx); err != nil {
		return err
	}
	if h.Account.acct.api == tokenAPIWork && !h.RawToken {
		// WeCom tickets come from other endpoints (get_jsapi_ticket).
		return errors.New("JS-SDK signatures for WeCom are not supported; raw_token is")
	}
	return nil
}

// Cleanup releases the ticket caches and the account.
func (h *JSSDK) Cleanup() error {
	if h.Account != nil {
		return h.Account.Cleanup()
	}
	return nil
}

// ServeHTTP answers GET/POST ?url=<page url> with a wx.config signature,
// ?type=wx_card[&card_id&code&openid] with a card signature, or, with
// raw_token, the token itself. It is terminal.
func (h *JSSDK) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, HEAD, POST")
		return jsonError(w, http.StatusMethodNotAllowed, 40002, "method not allowed")
	}
	a := h.Account.acct
	a.enter()
	defer a.leave()
	if h.RawToken {
		e, err := a.Token(r.Context())
		if err != nil {
			return h.unavailable(w, "access_token", err)
		}
		return writeNoStore(w, map[string]any{"access_token": e.Value, "expires_in": int64(e.ExpiresAt.Sub(a.now()) / time.Second)})
	}
	typ := r.FormValue("type")
	if typ == "" {
		typ = "jsapi"
	}
	if !slices.Contains(ticketTypes, typ) {
		return jsonError(w, http.StatusBadRequest, 40097, "type must be jsapi or wx_card")
	}
	page := r.FormValue("url")
	if typ == "jsapi" {
		// WeChat signs the page URL without its fragment, raw.
		page, _, _ = strings.Cut(page, "#")
		if u, err := url.Parse(page); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return jsonError(w, http.StatusBadRequest, 40097, "url must be the page's absolute http(s) URL")
		}
	}
	t, err := a.ticket(typ).Token(r.Context())
	if err != nil {
		return h.unavailable(w, typ+" ticket", err)
	}
	nonce, ts := nonceStr(), a.now().Unix()
	if typ == "wx_card" {
		sig := cardSignature(t.Value, strconv.FormatInt(ts, 10), nonce, r.FormValue("card_id"), r.FormValue("code"), r.FormValue("openid"))
		return writeNoStore(w, map[string]any{"timestamp": strconv.FormatInt(ts, 10), "nonce_str": nonce, "signature": sig})
	}
	return writeNoStore(w, map[string]any{"appId": a.appid, "timestamp": ts, "nonceStr": nonce, "signature": jsapiSignature(t.Value, nonce, ts, page)})
}

// jsapiSignature is wx.config's signature: sha1 of the four fields in
// ASCII key order, with raw (unescaped) values.
func jsapiSignature(ticket, nonce string, ts int64, pageURL string) string {
	sum := sha1.Sum([]byte("jsapi_ticket=" + ticket + "&noncestr=" + nonce + "&timestamp=" + strconv.FormatInt(ts, 10) + "&url=" + pageURL))
	return hex.EncodeToString(sum[:])
}

// cardSignature is the card (addCard cardExt) signature: sha1 of the
// non-empty values sorted as strings and concatenated.
func cardSignature(values ...string) string {
	var vs []string
	for _, v := range values {
		if v != "" {
			vs = append(vs, v)
		}
	}
	sort.Strings(vs)
	sum := sha1.Sum([]byte(strings.Join(vs, "")))
	return hex.EncodeToString(sum[:])
}

// nonceStr returns 16 random alphanumerics.
func nonceStr() string {
	const abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	var b [16]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = abc[int(b[i])%len(abc)]
	}
	return string(b[:])
}

// unavailable answers in WeChat's error shape; err never holds a token or
// ticket (see fetchTicket), and the account's redaction drops the secret.
func (h *JSSDK) unavailable(w http.ResponseWriter, what string, err error) error {
	code := -1
	var we *wechatError
	if errors.As(err, &we) {
		code = we.Code
	}
	return jsonError(w, http.StatusBadGateway, code, "caddy-wechat: no "+what+": "+h.Account.acct.redact(err.Error()))
}

func jsonError(w http.ResponseWriter, status, code int, msg string) error {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Wechat-Gateway", "error")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(map[string]any{"errcode": code, "errmsg": msg})
}

// writeNoStore writes v; no-store since it holds a credential or a
// signature that is only good for one page load.
func writeNoStore(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(v)
}

// parseJSSDK reads
//
//	wechat_jssdk [<matcher>] {
//	    appid / secret / corpid / corpsecret / upstream / token_api
//	    store / memcache / memcache_prefix / memcache_timeout
//	    fetch_timeout / fetch_ceiling / min_token_age / ... # any account subdirective of wechat
//	    raw_token            # serve the access_token instead (opt-in)
//	}
//
// The account subdirectives mean what they mean in `wechat`; give the same
// values there and here to share one token.
func parseJSSDK(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	d := h.Dispenser
	d.Next()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	t := newCaddyfileTransport()
	m := &JSSDK{Account: t}
	for d.NextBlock(0) {
		name := d.Val()
		args := d.RemainingArgs()
		if name == "raw_token" {
			if len(args) != 0 {
				return nil, d.ArgErr()
			}
			m.RawToken = true
			continue
		}
		known, err := t.parseOption(d, name, args)
		if err != nil {
			return nil, err
		}
		if !known {
			return nil, unknownSubdirective(d, "wechat_jssdk", name, "")
		}
	}
	if _, err := t.finishCaddyfile(d); err != nil {
		return nil, err
	}
	return m, nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*JSSDK)(nil)
	_ caddy.CleanerUpper          = (*JSSDK)(nil)
	_ caddyhttp.MiddlewareHandler = (*JSSDK)(nil)
)
