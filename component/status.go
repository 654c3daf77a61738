package component

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/statusview"
	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(componentAdmin{})
}

// componentAdmin serves GET /wechat/status/authorizers on Caddy's admin
// endpoint: per-authorizer detail, paged, since ten thousand of them
// would explode Prometheus. Read-only; no token, refresh token or ticket.
type componentAdmin struct{}

// CaddyModule returns the Caddy module information.
func (componentAdmin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "admin.api.wechat_component", New: func() caddy.Module { return new(componentAdmin) }}
}

// Routes returns the admin routes.
func (componentAdmin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/wechat/status/authorizers", Handler: caddy.AdminHandlerFunc(serveAuthorizers)}}
}

// StatusHTML answers a browser on /wechat/status/authorizers. The root
// sets it to the gateway's whole status page (its accounts and these
// components); left alone, the page shows the components only. A variable
// because the page is the root's and component never imports the root.
var StatusHTML = func(w http.ResponseWriter, r *http.Request) error {
	q, err := statusview.ParseQuery(r.URL.Query())
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	now := time.Now()
	p := &statusview.Page{Now: now}
	p.Components, p.Authorizers, p.Notice = StatusPage(r.Context(), q, now)
	return statusview.WriteHTML(w, r, p)
}

// authorizersPage is one page of the view.
type authorizersPage struct {
	Component   string                        `json:"component"`
	Authorizers int                           `json:"authorizers"` // held by this instance
	Ticket      bool                          `json:"ticket_stored"`
	Token       credential.Status             `json:"component_token"`
	Items       []credential.AuthorizerStatus `json:"items"`
	NextCursor  string                        `json:"next_cursor,omitempty"`
	Matched     *int                          `json:"matched,omitempty"` // with ?q= or ?unhealthy=1: how many match
}

// serveAuthorizers: ?component=<appid> (needed when several components
// are configured), cursor (the last appid of the previous page), limit
// (default 100, at most 1000), q (a part of the authorizer appid),
// unhealthy=1 (statusview.Unhealthy's). HTML to a browser.
func serveAuthorizers(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("GET only")}
	}
	if statusview.WantsHTML(r) {
		return StatusHTML(w, r)
	}
	q, err := statusview.ParseQuery(r.URL.Query())
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	want := q.Component
	var found []*platform
	platforms.Range(func(_, v any) bool {
		if p := v.(*platform); want == "" || p.appid == want {
			found = append(found, p)
		}
		return true
	})
	switch {
	case len(found) == 0:
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.New("no such component")}
	case len(found) > 1:
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("several components: name one with ?component=<appid>")}
	}
	p := found[0]
	var keep func(*credential.AuthorizerStatus) bool
	if q.Unhealthy {
		keep = statusview.Unhealthy(time.Now())
	}
	items, next, total := p.reg.Find(q.Cursor, q.Limit, q.Search, keep)
	page := authorizersPage{Component: p.appid, Authorizers: p.reg.Len(), Token: p.comp.Status(), Items: items, NextCursor: next}
	if q.Search != "" || q.Unhealthy {
		page.Matched = &total
	}
	if v, err := p.comp.Aux().Get(r.Context(), credential.AuxVerifyTicket); err == nil && len(v) > 0 {
		page.Ticket = true
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(page)
}
