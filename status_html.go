package wechat

// The status page for people (internal/statusview renders it): served by
// the admin API where the JSON is, to a client that asks for HTML, and
// by the wechat_status handler, which a site mounts behind basic_auth.

import (
	"context"
	"net/http"
	"sort"
	"time"

	"github.com/caddy-wechat/wechat/component"
	"github.com/caddy-wechat/wechat/internal/statusview"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(StatusHandler{})
	httpcaddyfile.RegisterHandlerDirective("wechat_status", parseStatusHandler)
	// Terminal, like respond: no `order` option needed.
	httpcaddyfile.RegisterDirectiveOrder("wechat_status", httpcaddyfile.Before, "respond")
	// The admin API's authorizers view (component/) answers a browser
	// with this page, accounts included.
	component.StatusHTML = serveStatusHTML
}

// StatusHandler is the HTTP handler "wechat_status": the status page of
// every account and component of this process, read-only, with no token,
// ticket, refresh token or secret. Anyone who reaches it learns the
// appids and their health, so mount it behind basic_auth or a remote_ip
// guard. Terminal: it never calls the next handler.
type StatusHandler struct{}

// CaddyModule returns the Caddy module information.
func (StatusHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.wechat_status", New: func() caddy.Module { return new(StatusHandler) }}
}

func (StatusHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return caddyhttp.Error(http.StatusMethodNotAllowed, errMethod)
	}
	q, err := statusview.ParseQuery(r.URL.Query())
	if err != nil {
		return caddyhttp.Error(http.StatusBadRequest, err)
	}
	return statusview.WriteHTML(w, r, statusPage(r.Context(), q, time.Now()))
}

// parseStatusHandler: `wechat_status`, no arguments.
func parseStatusHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	s := new(StatusHandler)
	return s, s.UnmarshalCaddyfile(h.Dispenser)
}

// UnmarshalCaddyfile reads `wechat_status` (no arguments, no block).
func (*StatusHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("wechat_status takes no block")
	}
	return nil
}

// serveStatusHTML is the admin API's HTML answer, on /wechat/status and
// /wechat/status/authorizers alike.
func serveStatusHTML(w http.ResponseWriter, r *http.Request) error {
	q, err := statusview.ParseQuery(r.URL.Query())
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	return statusview.WriteHTML(w, r, statusPage(r.Context(), q, time.Now()))
}

// statusPage gathers what the page shows from the pools: the same state
// as the JSON views.
func statusPage(ctx context.Context, q statusview.Query, now time.Time) *statusview.Page {
	p := &statusview.Page{Now: now}
	var accts []*sharedAccount
	accounts.Range(func(_, v any) bool { accts = append(accts, v.(*sharedAccount)); return true })
	for _, a := range accts {
		v := a.view()
		p.Accounts = append(p.Accounts, statusview.Account{AppID: v.AppID, Label: v.Account, TokenAPI: v.TokenAPI,
			Store: statusview.StoreOf(a.shared), HasToken: v.HasToken, Token: v.Status, Tickets: v.Tickets})
	}
	sort.Slice(p.Accounts, func(i, j int) bool {
		x, y := p.Accounts[i], p.Accounts[j]
		return x.AppID+x.TokenAPI+x.Label < y.AppID+y.TokenAPI+y.Label
	})
	p.Components, p.Authorizers, p.Notice = component.StatusPage(ctx, q, now)
	return p
}

var (
	_ caddyhttp.MiddlewareHandler = StatusHandler{}
	_ caddyfile.Unmarshaler       = (*StatusHandler)(nil)
)
