// Package statusview renders the gateway's status for people: one
// self-contained HTML page (inline CSS under a hash in a strict CSP, no
// script, no external load) with the accounts and their credentials,
// the components and a page of their authorizers with a search and an
// unhealthy filter as plain GET forms and links.
//
// It is fed plain structs (credential.Status and the structs below) and
// imports nothing from Caddy, so the admin API, the wechat_status
// handler and the tests render the same page. Nothing it is given holds
// a token, ticket, refresh token or secret, and the page can show
// nothing else.
package statusview

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// Page is everything one status page shows.
type Page struct {
	Now        time.Time
	Accounts   []Account
	Components []Component
	// Authorizers is the page of the selected component's authorizers;
	// nil when no component is configured (or none is selected).
	Authorizers *Authorizers
	// Notice is shown above the authorizers (e.g. "choose a component").
	Notice string
}

// Account is one account of the wechat transport (or WeCom app).
type Account struct {
	AppID    string
	Label    string // the metrics label: tells two accounts of one appid apart
	TokenAPI string
	Store    Store
	HasToken bool
	Token    credential.Status
	Tickets  []credential.Status
}

// Store is what the page says about a credential store.
type Store struct {
	Configured  bool // false: this process only
	Durable     bool
	BreakerOpen bool
}

// StoreOf describes a credential store (nil: none).
func StoreOf(s *credential.Shared) Store {
	if s == nil {
		return Store{}
	}
	return Store{Configured: true, Durable: s.Durable(), BreakerOpen: s.BreakerOpen()}
}

// Component is one open platform component.
type Component struct {
	AppID        string
	Authorizers  int // held by this instance
	Unhealthy    int
	TicketStored bool
	Token        credential.Status
	Store        Store
}

// Authorizers is one page of a component's authorizers.
type Authorizers struct {
	Query
	Total int // authorizers matching the search and filter
	Items []credential.AuthorizerStatus
	Next  string // cursor of the next page; "" at the end
}

// Query is what a status request asks for, the same for the JSON and
// the HTML views: ?component=&q=&unhealthy=1&cursor=&limit=.
type Query struct {
	Component string
	Search    string // a part of the authorizer appid
	Unhealthy bool
	Cursor    string // the last appid of the previous page
	Limit     int
}

// DefaultLimit and MaxLimit bound a page of authorizers.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// ParseQuery reads and checks a status query. Search and cursor are
// appid characters only: they end up in links and log-free lookups.
func ParseQuery(v url.Values) (Query, error) {
	q := Query{Component: v.Get("component"), Search: strings.TrimSpace(v.Get("q")), Cursor: v.Get("cursor"), Limit: DefaultLimit}
	for _, f := range []struct{ name, val string }{{"component", q.Component}, {"q", q.Search}, {"cursor", q.Cursor}} {
		if f.val != "" && !credential.ValidAppID(f.val) {
			return q, fmt.Errorf("%s: want appid characters (letters, digits, _ and -), at most 64", f.name)
		}
	}
	switch v.Get("unhealthy") {
	case "", "0", "false", "off":
	case "1", "true", "on":
		q.Unhealthy = true
	default:
		return q, errors.New("unhealthy: want 1 or 0")
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return q, errors.New("limit: want a positive number")
		}
		q.Limit = min(n, MaxLimit)
	}
	return q, nil
}

// Values is q as a query string's values, without the defaults: the
// links of the page are built from it.
func (q Query) Values() url.Values {
	v := url.Values{}
	if q.Component != "" {
		v.Set("component", q.Component)
	}
	if q.Search != "" {
		v.Set("q", q.Search)
	}
	if q.Unhealthy {
		v.Set("unhealthy", "1")
	}
	if q.Cursor != "" {
		v.Set("cursor", q.Cursor)
	}
	if q.Limit != 0 && q.Limit != DefaultLimit {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// WantsHTML reports whether a request asks for HTML before JSON, as a
// browser does (Accept: text/html,...,*/*;q=0.8). curl's */* and a
// missing Accept get JSON, so the admin API's clients see no change.
func WantsHTML(r *http.Request) bool {
	html, json := -1.0, -1.0
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		q := 1.0
		if s, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				q = f
			}
		}
		switch mt {
		case "text/html", "application/xhtml+xml":
			html = max(html, q)
		case "application/json":
			json = max(json, q)
		}
	}
	return html > 0 && html > json
}

// Unhealthy is the status page's filter: an authorizer whose last fetch
// failed (a lost or revoked refresh token among them), whose rotated
// refresh token could not be saved, that spent its fetch ceiling, whose
// store is down, or whose token expired without a renewal.
func Unhealthy(now time.Time) func(*credential.AuthorizerStatus) bool {
	return func(s *credential.AuthorizerStatus) bool {
		return s.LastError != "" || s.RefreshUnsaved || s.CeilingReached || s.StoreDown ||
			(!s.ExpiresAt.IsZero() && !now.Before(s.ExpiresAt))
	}
}

// State names the conditions a credential is in, worst first; "healthy"
// when none. The words are the page's, and its tests read them.
func State(st credential.Status, now time.Time) []string {
	var out []string
	if st.CeilingReached {
		out = append(out, "at the ceiling")
	}
	if st.LastError != "" {
		if st.RetryAt.After(now) {
			out = append(out, "backing off")
		} else {
			out = append(out, "failing")
		}
	}
	if st.StoreDown {
		out = append(out, "store down")
	}
	switch {
	case st.FetchedAt.IsZero():
		if st.LastError == "" {
			out = append(out, "no token yet")
		}
	case !now.Before(st.ExpiresAt):
		out = append(out, "expired")
	case !st.RenewAt.IsZero() && !now.Before(st.RenewAt) && st.LastError == "":
		out = append(out, "renewing")
	}
	if len(out) == 0 {
		out = append(out, "healthy")
	}
	return out
}

var (
	errcodeRE = regexp.MustCompile(`errcode (-?\d+)`)
	ipRE      = regexp.MustCompile(`invalid ip ([0-9A-Fa-f.:]+)`)
)

// Errcode is the WeChat errcode an error text names, or 0.
func Errcode(text string) int {
	if m := errcodeRE.FindStringSubmatch(text); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

// WhitelistIP is the IP WeChat names in a 40164 errmsg ("invalid ip
// 1.2.3.4 ipv6 ::ffff:1.2.3.4, not in whitelist"), or "".
func WhitelistIP(text string) string {
	if m := ipRE.FindStringSubmatch(text); m != nil {
		return strings.TrimRight(m[1], ",.")
	}
	return ""
}

// Advice says in words what to do about a credential error: the
// README's troubleshooting table, keyed by errcode (and for WeCom by the
// token API), for the status page and for `caddy wechat doctor`.
func Advice(tokenAPI, text string) string {
	code := Errcode(text)
	if tokenAPI == credential.APIWork {
		switch code {
		case 40001, 40091:
			return "wrong corpsecret: copy the app's Secret from the WeCom admin console into corpsecret"
		case 40013:
			return "wrong corpid: fix corpid"
		case 60020:
			if ip := WhitelistIP(text); ip != "" {
				return "add " + ip + " to the WeCom app's trusted IPs (企业可信IP)"
			}
			return "add this server's IP to the WeCom app's trusted IPs (企业可信IP)"
		}
	}
	switch code {
	case 40164, 61004:
		if ip := WhitelistIP(text); ip != "" {
			return "add " + ip + " to the account's IP whitelist (开发 → 基本配置 → IP白名单)"
		}
		return "add this server's IP to the account's IP whitelist (开发 → 基本配置 → IP白名单)"
	case 40125:
		return "wrong secret: fix secret; regenerate it if it leaked"
	case 40013:
		return "wrong appid: fix appid"
	case 40001:
		return "wrong secret (not a token problem): fix secret; the gateway backs off, it never loops"
	case 40243:
		return "the secret is frozen: unfreeze it in the admin console (mp.weixin.qq.com)"
	case 89503:
		return "this call needs the admin's confirmation: confirm on the admin's phone, then retry"
	case 45009, 45011:
		return "a WeChat quota is spent: wait; caddy_wechat_token_fetches_total shows who is fetching"
	case -1:
		return "WeChat is busy: the gateway backs off and retries by itself"
	case 61023:
		return "the refresh token is invalid (rotated or lost): the merchant must authorize the platform again"
	case 61005, 61006:
		return "the component_verify_ticket is stale or wrong: check that WeChat's pushes reach the callback"
	}
	switch {
	case strings.Contains(text, credential.ErrFetchCeiling.Error()):
		return "the daily fetch ceiling is spent: fetches resume after midnight, Beijing time; find what forces renewals, or raise fetch_ceiling"
	case strings.Contains(text, "store unavailable"):
		return "the store does not answer: requests go on with the in-process token; check the store server"
	case strings.Contains(text, "component_verify_ticket"):
		return "no ticket pushed yet: wait for the next push (10 min) or fix the callback URL"
	}
	return ""
}
