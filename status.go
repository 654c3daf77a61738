package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// WeChat's daily quotas: classic fetches, and stable force_refresh calls.
const (
	quotaClassic = 2000
	quotaForce   = 20
	// budgetWarnShare is the share of a quota past which a warning is logged.
	budgetWarnShare = 0.5
)

// beijing is where WeChat's daily quotas reset at midnight.
var beijing = time.FixedZone("UTC+8", 8*3600)

// accountStatus is what the status endpoint shows of an account. It never
// holds the token. Guarded by account.mu.
type accountStatus struct {
	FetchedAt   time.Time `json:"fetched_at,omitzero"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	Source      string    `json:"source,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	Day         string    `json:"day"`
	Fetches     int64     `json:"fetches_today"`
	Forced      int64     `json:"force_refreshes_today"`
	warned      bool
}

func (s *accountStatus) setToken(e *tokenEntry) {
	s.FetchedAt, s.ExpiresAt, s.Source = e.FetchedAt, e.ExpiresAt, e.Source
}

func (s *accountStatus) setError(err error, now time.Time) {
	s.LastError, s.LastErrorAt = err.Error(), now
}

// forceAllowed reports whether today's force_refresh budget has room.
func (s *accountStatus) forceAllowed() bool { return s.Forced < quotaForce }

// budgetCount counts one fetch against today's budget. With memcache the
// count is the cluster's; otherwise this instance's.
func (a *account) budgetCount(force bool) {
	now := a.now()
	day := now.In(beijing).Format("2006-01-02")
	var total, forced int64
	shared := false
	if a.store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		total, forced, shared = a.store.countFetch(ctx, day, force)
		cancel()
	}
	a.mu.Lock()
	st := &a.status
	if st.Day != day {
		st.Day, st.Fetches, st.Forced, st.warned = day, 0, 0, false
	}
	if shared {
		st.Fetches, st.Forced = total, forced
	} else {
		st.Fetches++
		if force {
			st.Forced++
		}
	}
	// Classic fetches count against 2000/day; with stable tokens only
	// force_refresh is scarce (20/day).
	quota, used := int64(quotaClassic), st.Fetches
	if a.api != tokenAPIClassic {
		quota, used = quotaForce, st.Forced
	}
	share := budgetWarnShare
	if f := a.fetcher.Load(); f != nil && f.quotaWarn > 0 {
		share = f.quotaWarn
	}
	warn := !st.warned && used > 0 && float64(used) >= share*float64(quota)
	if warn {
		st.warned = true
	}
	a.mu.Unlock()
	if warn {
		a.log().Warn("wechat: token fetches are using up the daily quota",
			zap.String("appid", a.appid), zap.String("token_api", a.api),
			zap.Int64("used", used), zap.Int64("quota", quota), zap.String("day", day))
	}
}

func (a *account) fetchesToday() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.status.Day != a.now().In(beijing).Format("2006-01-02") {
		return 0
	}
	return a.status.Fetches
}

// accountView is one row of the status endpoint.
type accountView struct {
	AppID    string `json:"appid"`
	TokenAPI string `json:"token_api"`
	Shared   bool   `json:"memcache"`
	accountStatus
	ExpiresIn int64 `json:"expires_in"`
	HasToken  bool  `json:"has_token"`
}

func (a *account) view() accountView {
	a.mu.Lock()
	v := accountView{AppID: a.appid, TokenAPI: a.api, Shared: a.store != nil, accountStatus: a.status}
	a.mu.Unlock()
	if e := a.cur.Load(); e != nil {
		v.HasToken = true
		v.ExpiresIn = int64(e.ExpiresAt.Sub(a.now()) / time.Second)
	}
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
	views := []accountView{}
	accounts.Range(func(_, v any) bool {
		views = append(views, v.(*account).view())
		return true
	})
	sort.Slice(views, func(i, j int) bool { return views[i].AppID+views[i].TokenAPI < views[j].AppID+views[j].TokenAPI })
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]any{"accounts": views})
}

var errMethod = errors.New("method not allowed: /wechat/status is read-only")

var _ caddy.AdminRouter = adminAPI{}
