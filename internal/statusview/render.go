package statusview

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

//go:embed page.css
var css string

//go:embed page.html
var pageHTML string

// The style sheet is inline and allowed by its hash, so the CSP needs no
// 'unsafe-inline'; there is no script at all.
var (
	styleHash = func() string {
		sum := sha256.Sum256([]byte(css))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}()
	// CSP is the page's Content-Security-Policy: nothing loads, nothing
	// runs, forms go back to the page itself, no one frames it.
	CSP = "default-src 'none'; style-src " + styleHash + "; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

	tmpl = template.Must(template.New("page").Parse(strings.Replace(pageHTML, "/*CSS*/", css, 1)))
)

// Render writes the page.
func Render(w io.Writer, p *Page) error {
	return tmpl.Execute(w, build(p))
}

var bufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// WriteHTML renders p and sends it with the page's headers (CSP, no
// caching, no sniffing, no referrer, no framing). HEAD gets the headers.
func WriteHTML(w http.ResponseWriter, r *http.Request, p *Page) error {
	b := bufs.Get().(*bytes.Buffer)
	b.Reset()
	defer bufs.Put(b)
	if err := Render(b, p); err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", CSP)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	h.Add("Vary", "Accept")
	if r.Method == http.MethodHead {
		return nil
	}
	_, err := w.Write(b.Bytes())
	return err
}

// The template's view: every value already in words.
type view struct {
	Now         string
	Accounts    []accountRow
	Components  []componentRow
	Problems    int
	Authorizers *authorizersView
	Notice      string
}

type accountRow struct {
	AppID, Label, TokenAPI, Store string
	StoreBad                      bool
	Creds                         []Row
}

// Row is a credential in words, as the page and `caddy wechat status`
// show it.
type Row struct {
	Name, State, StateClass string
	Source, Age, Expires    string
	Renew                   string
	Fetches, Forced         string
	FetchN, FetchMax        int
	FetchHigh               int
	Error, ErrorAt, Advice  string
}

type componentRow struct {
	AppID, Store string
	StoreBad     bool
	Authorizers  int
	Unhealthy    int
	Ticket       bool
	Token        Row
	Link, BadURL string
}

type authorizersView struct {
	Component, Search string
	Unhealthy         bool
	Limit             int
	Total             int
	Shown             string
	Rows              []authRow
	Next, First       string
	Filtered          bool
}

type authRow struct {
	Row
	AppID   string
	Unsaved bool
}

func build(p *Page) *view {
	now := p.Now
	v := &view{Now: now.UTC().Format("2006-01-02 15:04:05 UTC"), Notice: p.Notice}
	for _, a := range p.Accounts {
		row := accountRow{AppID: a.AppID, Label: a.Label, TokenAPI: a.TokenAPI, Store: storeWords(a.Store), StoreBad: a.Store.BreakerOpen}
		row.Creds = append(row.Creds, cred(a.Token, a.TokenAPI, now))
		for _, t := range a.Tickets {
			row.Creds = append(row.Creds, cred(t, a.TokenAPI, now))
		}
		for _, c := range row.Creds {
			if c.StateClass != "ok" && c.State != "renewing" {
				v.Problems++ // a renewal in flight is the normal course
			}
		}
		v.Accounts = append(v.Accounts, row)
	}
	for _, c := range p.Components {
		row := componentRow{AppID: c.AppID, Store: storeWords(c.Store), StoreBad: c.Store.BreakerOpen,
			Authorizers: c.Authorizers, Unhealthy: c.Unhealthy, Ticket: c.TicketStored, Token: cred(c.Token, "", now)}
		row.Link = "?" + Query{Component: c.AppID}.Values().Encode()
		row.BadURL = "?" + Query{Component: c.AppID, Unhealthy: true}.Values().Encode()
		if row.Token.StateClass != "ok" || !c.TicketStored {
			v.Problems++
		}
		v.Problems += c.Unhealthy
		v.Components = append(v.Components, row)
	}
	if a := p.Authorizers; a != nil {
		av := &authorizersView{Component: a.Component, Search: a.Search, Unhealthy: a.Unhealthy, Limit: a.Limit, Total: a.Total,
			Filtered: a.Search != "" || a.Unhealthy}
		for _, it := range a.Items {
			r := authRow{Row: cred(it.Status, "", now), AppID: it.AppID, Unsaved: it.RefreshUnsaved}
			if it.RefreshUnsaved {
				r.State += ", refresh token unsaved"
				r.StateClass = "bad"
			}
			av.Rows = append(av.Rows, r)
		}
		if len(a.Items) > 0 {
			av.Shown = fmt.Sprintf("%s – %s", a.Items[0].AppID, a.Items[len(a.Items)-1].AppID)
		}
		base := a.Query
		base.Cursor = ""
		if a.Cursor != "" {
			av.First = "?" + base.Values().Encode()
		}
		if a.Next != "" {
			base.Cursor = a.Next
			av.Next = "?" + base.Values().Encode()
		}
		v.Authorizers = av
	}
	return v
}

func storeWords(s Store) string {
	switch {
	case !s.Configured:
		return "this process only"
	case s.BreakerOpen:
		return "shared store DOWN (breaker open; going on locally)"
	case s.Durable:
		return "shared store, durable (breaker closed)"
	}
	return "shared store (breaker closed)"
}

// Describe puts a credential's status in words: states, ages, the
// fetches against the ceiling, the last error and what to do about it.
func Describe(st credential.Status, tokenAPI string, now time.Time) Row {
	return cred(st, tokenAPI, now)
}

func cred(st credential.Status, api string, now time.Time) Row {
	states := State(st, now)
	r := Row{Name: st.Name, State: strings.Join(states, ", "), StateClass: "ok", Source: st.Source,
		FetchN: int(st.Fetches), FetchMax: st.Ceiling, FetchHigh: st.Ceiling * 4 / 5}
	switch states[0] {
	case "healthy":
	case "renewing", "no token yet", "store down":
		r.StateClass = "warn"
	default:
		r.StateClass = "bad"
	}
	if (states[0] == "backing off" || states[0] == "failing") && !st.FetchedAt.IsZero() && now.Before(st.ExpiresAt) {
		r.StateClass = "warn" // a renewal failed, the token still works: act before it expires
	}
	if r.Source == "" {
		r.Source = "—"
	}
	if !st.FetchedAt.IsZero() {
		r.Age = human(now.Sub(st.FetchedAt))
		if d := st.ExpiresAt.Sub(now); d > 0 {
			r.Expires = "in " + human(d)
		} else {
			r.Expires = "expired " + human(-d) + " ago"
		}
	}
	switch {
	case !st.RetryAt.IsZero() && st.RetryAt.After(now):
		r.Renew = "retry in " + human(st.RetryAt.Sub(now))
	case st.RenewAt.IsZero():
	case st.RenewAt.After(now):
		r.Renew = "in " + human(st.RenewAt.Sub(now))
	default:
		r.Renew = "due " + human(now.Sub(st.RenewAt)) + " ago"
	}
	today := st.Fetches
	if st.Day != "" && st.Day != now.In(beijing).Format("2006-01-02") {
		today = 0
	}
	r.FetchN = int(today)
	if st.Ceiling > 0 {
		r.Fetches = fmt.Sprintf("%d / %d", today, st.Ceiling)
	} else {
		r.Fetches = fmt.Sprintf("%d (no ceiling)", today)
	}
	r.Forced = strconv.FormatInt(st.Forced, 10)
	if st.LastError != "" {
		r.Error = st.LastError
		if !st.LastErrorAt.IsZero() {
			r.ErrorAt = human(now.Sub(st.LastErrorAt)) + " ago"
		}
		r.Advice = Advice(api, st.LastError)
	}
	return r
}

// beijing is where WeChat's daily quotas reset.
var beijing = time.FixedZone("UTC+8", 8*3600)

// human is a duration the way a person reads it: 1h52m, 3m05s, 12s.
func human(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < 0:
		return "-" + human(-d)
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}
