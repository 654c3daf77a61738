package wechat

import (
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/caddy-wechat/wechat/component"
	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/statusview"
	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// accountView is one row of the status endpoint. It never holds a token.
type accountView struct {
	AppID    string `json:"appid"`
	Account  string `json:"account"` // the metrics label: tells two accounts of one appid apart
	TokenAPI string `json:"token_api"`
	Shared   bool   `json:"store"`
	credential.Status
	ExpiresIn int64               `json:"expires_in"`
	HasToken  bool                `json:"has_token"`
	Tickets   []credential.Status `json:"tickets,omitempty"`
}

// fetchesToday is st's count if it is today's.
func fetchesToday(st credential.Status, now time.Time) int64 {
	if st.Day != credential.Day(now) {
		return 0
	}
	return st.Fetches
}

func (a *sharedAccount) view() accountView {
	v := accountView{AppID: a.appid, Account: a.label, TokenAPI: a.api, Shared: a.shared != nil, Status: a.tokens.Status()}
	if e := a.tokens.Current(); e != nil {
		v.HasToken = true
		v.ExpiresIn = int64(e.ExpiresAt.Sub(a.now()) / time.Second)
	}
	a.mu.Lock()
	for _, c := range a.tickets {
		v.Tickets = append(v.Tickets, c.Status())
	}
	a.mu.Unlock()
	sort.Slice(v.Tickets, func(i, j int) bool { return v.Tickets[i].Name < v.Tickets[j].Name })
	v.LastError = a.redact(v.LastError)
	return v
}

// adminAPI serves GET /wechat/status on Caddy's admin endpoint, so it
// inherits the admin endpoint's own access control. Read-only, no tokens.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "admin.api.wechat", New: func() caddy.Module { return new(adminAPI) }}
}

// Routes returns the admin routes.
func (adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/wechat/status", Handler: caddy.AdminHandlerFunc(serveStatus)}}
}

func serveStatus(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errMethod}
	}
	if statusview.WantsHTML(r) {
		return serveStatusHTML(w, r)
	}
	views := []accountView{}
	accounts.Range(func(_, v any) bool {
		views = append(views, v.(*sharedAccount).view())
		return true
	})
	sort.Slice(views, func(i, j int) bool {
		return views[i].AppID+views[i].TokenAPI+views[i].Account < views[j].AppID+views[j].TokenAPI+views[j].Account
	})
	out := map[string]any{"accounts": views}
	if c := component.Views(r.Context()); c != nil {
		out["components"] = c
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Add("Vary", "Accept")
	return json.NewEncoder(w).Encode(out)
}

var errMethod = errors.New("method not allowed: /wechat/status is read-only")

var _ caddy.AdminRouter = adminAPI{}
