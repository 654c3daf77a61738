package statusview_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/statusview"
)

var now = time.Date(2026, 12, 3, 2, 0, 0, 0, time.UTC)

func tok(name string, age, ttl, renewIn time.Duration) credential.Status {
	return credential.Status{Name: name, Source: "fetch", FetchedAt: now.Add(-age), ExpiresAt: now.Add(-age + ttl),
		RenewAt: now.Add(renewIn), Day: now.In(time.FixedZone("", 8*3600)).Format("2006-01-02"), Fetches: 3, Ceiling: 200}
}

// One account in each state the page names, from the status alone.
func TestState(t *testing.T) {
	healthy := tok("access_token", time.Minute, 2*time.Hour, time.Hour)
	renewing := tok("access_token", 118*time.Minute, 2*time.Hour, -10*time.Second)
	backoff := credential.Status{Name: "access_token", LastError: "WeChat token endpoint answered errcode 40125: bad secret", LastErrorAt: now, RetryAt: now.Add(20 * time.Second)}
	ceiling := healthy
	ceiling.CeilingReached, ceiling.Fetches, ceiling.Ceiling = true, 200, 200
	down := healthy
	down.StoreDown = true
	expired := tok("access_token", 3*time.Hour, 2*time.Hour, -time.Hour)
	for _, c := range []struct {
		st   credential.Status
		want string
	}{
		{healthy, "healthy"}, {renewing, "renewing"}, {backoff, "backing off"}, {ceiling, "at the ceiling"},
		{down, "store down"}, {expired, "expired"}, {credential.Status{Name: "jsapi"}, "no token yet"},
		{credential.Status{LastError: "x", RetryAt: now.Add(-time.Second)}, "failing"},
	} {
		if got := strings.Join(statusview.State(c.st, now), ", "); got != c.want {
			t.Errorf("State = %q, want %q (%+v)", got, c.want, c.st)
		}
	}
	unhealthy := statusview.Unhealthy(now)
	for _, c := range []struct {
		st   credential.AuthorizerStatus
		want bool
	}{
		{credential.AuthorizerStatus{Status: healthy}, false},
		{credential.AuthorizerStatus{Status: renewing}, false},
		{credential.AuthorizerStatus{Status: backoff}, true},
		{credential.AuthorizerStatus{Status: ceiling}, true},
		{credential.AuthorizerStatus{Status: down}, true},
		{credential.AuthorizerStatus{Status: expired}, true},
		{credential.AuthorizerStatus{Status: healthy, RefreshUnsaved: true}, true},
	} {
		if got := unhealthy(&c.st); got != c.want {
			t.Errorf("Unhealthy(%+v) = %v", c.st, got)
		}
	}
}

// A failed renewal while the token still works is a warning; without a
// token it is an error.
func TestDescribeClass(t *testing.T) {
	st := tok("access_token", 118*time.Minute, 2*time.Hour, -time.Minute)
	st.LastError, st.RetryAt = "WeChat token endpoint answered errcode -1: system error", now.Add(10*time.Second)
	if r := statusview.Describe(st, "stable", now); r.State != "backing off" || r.StateClass != "warn" || !strings.Contains(r.Advice, "busy") {
		t.Errorf("valid token, renewal failing: %+v", r)
	}
	st.FetchedAt = time.Time{}
	if r := statusview.Describe(st, "stable", now); r.StateClass != "bad" {
		t.Errorf("no token, fetch failing: %+v", r)
	}
}

// The words for each errcode the README's table lists, the IP of a
// 40164 among them.
func TestAdvice(t *testing.T) {
	for _, c := range []struct{ api, text, want string }{
		{"stable", "WeChat token endpoint answered errcode 40164: this server's IP is not in the account's IP whitelist (invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist)", "add 203.0.113.7 to the account's IP whitelist"},
		{"stable", "errcode 40125: bad secret", "wrong secret: fix secret"},
		{"stable", "errcode 40013: bad appid", "wrong appid"},
		{"stable", "errcode 40243: AppSecret has been frozen", "unfreeze it"},
		{"stable", "errcode 89503: this call needs admin confirmation", "confirm on the admin's phone"},
		{"work", "errcode 40001: bad corpsecret", "wrong corpsecret"},
		{"stable", credential.ErrFetchCeiling.Error(), "ceiling is spent"},
		{"stable", "errcode 12345: who knows", ""},
	} {
		if got := statusview.Advice(c.api, c.text); !strings.Contains(got, c.want) || (c.want == "" && got != "") {
			t.Errorf("Advice(%q) = %q, want %q", c.text, got, c.want)
		}
	}
}

func TestWantsHTML(t *testing.T) {
	for accept, want := range map[string]bool{
		"": false, "*/*": false, "application/json": false,
		"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8": true,
		"application/json, text/html;q=0.5":                               false,
		"text/html;q=0":                                                   false,
		"text/html":                                                       true,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Accept", accept)
		if got := statusview.WantsHTML(r); got != want {
			t.Errorf("Accept %q: WantsHTML = %v", accept, got)
		}
	}
}

func TestParseQuery(t *testing.T) {
	q, err := statusview.ParseQuery(url.Values{"component": {"wxc"}, "q": {" wxa1 "}, "unhealthy": {"1"}, "cursor": {"wxa10"}, "limit": {"5000"}})
	if err != nil || q.Search != "wxa1" || !q.Unhealthy || q.Cursor != "wxa10" || q.Limit != statusview.MaxLimit {
		t.Fatalf("%+v %v", q, err)
	}
	for _, bad := range []url.Values{{"q": {"<x>"}}, {"cursor": {"a b"}}, {"limit": {"0"}}, {"limit": {"x"}}, {"unhealthy": {"maybe"}}, {"component": {strings.Repeat("a", 65)}}} {
		if _, err := statusview.ParseQuery(bad); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

func samplePage() *statusview.Page {
	ceiling := tok("access_token", time.Minute, 2*time.Hour, time.Hour)
	ceiling.CeilingReached, ceiling.Fetches, ceiling.Ceiling = true, 200, 200
	down := tok("access_token", time.Minute, 2*time.Hour, time.Hour)
	down.StoreDown = true
	return &statusview.Page{
		Now: now,
		Accounts: []statusview.Account{
			{AppID: "wxhealthy", Label: "aaaa", TokenAPI: "stable", HasToken: true, Token: tok("access_token", time.Minute, 2*time.Hour, time.Hour),
				Tickets: []credential.Status{tok("jsapi", time.Minute, 2*time.Hour, time.Hour)}},
			{AppID: "wxbackoff", Label: "bbbb", TokenAPI: "stable", Token: credential.Status{Name: "access_token",
				LastError: `WeChat token endpoint answered errcode 40125: bad secret <script>alert(1)</script>`, LastErrorAt: now, RetryAt: now.Add(20 * time.Second)}},
			{AppID: "wxceiling", Label: "cccc", TokenAPI: "classic", HasToken: true, Token: ceiling},
			{AppID: "wxdown", Label: "dddd", TokenAPI: "stable", HasToken: true, Token: down, Store: statusview.Store{Configured: true, BreakerOpen: true}},
		},
		Components: []statusview.Component{{AppID: "wxcomp", Authorizers: 3, Unhealthy: 1, TicketStored: true, Token: tok("component_access_token", time.Minute, 2*time.Hour, time.Hour)}},
		Authorizers: &statusview.Authorizers{
			Query: statusview.Query{Component: "wxcomp", Search: "wxa", Cursor: "wxa0", Limit: 2}, Total: 3, Next: "wxa2",
			Items: []credential.AuthorizerStatus{
				{AppID: "wxa1", Status: tok("authorizer_access_token", time.Minute, 2*time.Hour, time.Hour)},
				{AppID: "wxa2", Status: credential.Status{Name: "authorizer_access_token", LastError: "WeChat api_authorizer_token endpoint answered errcode 61023: refresh_token is invalid"}},
			},
		},
	}
}

// The page: every state in words, errors escaped, paging links that keep
// the search, a CSP whose hash is the page's only style, no script and
// nothing loaded from anywhere.
func TestRenderPage(t *testing.T) {
	rec := httptest.NewRecorder()
	if err := statusview.WriteHTML(rec, httptest.NewRequest("GET", "/wechat/status", nil), samplePage()); err != nil {
		t.Fatal(err)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`data-appid="wxhealthy"`, `data-credential="jsapi" data-state="healthy"`,
		`data-state="backing off"`, `retry in 20s`, `wrong secret: fix secret`,
		`data-state="at the ceiling"`, `200 / 200`,
		`data-state="store down"`, `data-store="down"`,
		`&lt;script&gt;alert(1)&lt;/script&gt;`,
		`href="?component=wxcomp&amp;cursor=wxa2&amp;limit=2&amp;q=wxa"`, `id="first" href="?component=wxcomp&amp;limit=2&amp;q=wxa"`,
		`data-appid="wxa2" data-state="failing"`, `must authorize the platform again`,
		`name="q" value="wxa"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if strings.Contains(strings.ToLower(body), "<script") {
		t.Error("the page has a script element")
	}
	if m := regexp.MustCompile(`(?i)(src|href)="(https?:)?//`).FindString(body); m != "" {
		t.Errorf("the page loads or links outside: %s", m)
	}
	styles := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindAllStringSubmatch(body, -1)
	if len(styles) != 1 {
		t.Fatalf("%d style elements", len(styles))
	}
	sum := sha256.Sum256([]byte(styles[0][1]))
	h := rec.Header()
	csp := h.Get("Content-Security-Policy")
	if !strings.HasPrefix(csp, "default-src 'none'; style-src 'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'") || strings.Contains(csp, "unsafe") {
		t.Errorf("CSP %q does not allow exactly the page's style", csp)
	}
	if h.Get("Cache-Control") != "no-store" || h.Get("X-Content-Type-Options") != "nosniff" || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Errorf("headers: %v", h)
	}
	if strings.Contains(body, " style=") {
		t.Error("an inline style attribute: the CSP hash does not cover it")
	}
	head := httptest.NewRecorder()
	statusview.WriteHTML(head, httptest.NewRequest("HEAD", "/", nil), samplePage())
	if head.Body.Len() != 0 || head.Header().Get("Content-Length") != h.Get("Content-Length") {
		t.Errorf("HEAD: %d bytes, length %s", head.Body.Len(), head.Header().Get("Content-Length"))
	}
}

// BenchmarkStatusPage is one page of the status view at 10,000
// authorizers, of which 50 unhealthy: the registry's Find (search,
// filter, sort, statuses), the unhealthy count, and the rendered HTML.
// bytes/page is the size of the page sent.
func BenchmarkStatusPage(b *testing.B) {
	reg := credential.NewRegistry(&credential.Platform{}, credential.RegistryConfig{})
	defer reg.Close()
	const n = 10000
	ctx := context.Background()
	for i := range n {
		id := fmt.Sprintf("wxa%015d", i)
		var t *credential.Token
		if i%200 != 7 { // 50 without a token, past their expiry
			t = credential.NewToken("tok"+id, 7200, time.Now(), "store")
		} else {
			t = credential.NewToken("tok"+id, 7200, time.Now().Add(-3*time.Hour), "store")
		}
		if err := reg.Authorize(ctx, &credential.Authorization{AuthorizerAppID: id, RefreshToken: "r" + id, Token: t}); err != nil {
			b.Fatal(err)
		}
	}
	page := func(q statusview.Query) *statusview.Page {
		now := time.Now()
		bad := statusview.Unhealthy(now)
		var keep func(*credential.AuthorizerStatus) bool
		if q.Unhealthy {
			keep = bad
		}
		items, next, total := reg.Find(q.Cursor, q.Limit, q.Search, keep)
		nbad := total // as the gateway does (status_html.go): the filtered page counted them
		if !q.Unhealthy || q.Search != "" {
			_, _, nbad = reg.Find("", 1, "", bad)
		}
		return &statusview.Page{Now: now, Components: []statusview.Component{{AppID: "wxcomp", Authorizers: reg.Len(), Unhealthy: nbad, TicketStored: true}},
			Authorizers: &statusview.Authorizers{Query: q, Items: items, Next: next, Total: total}}
	}
	for _, c := range []struct {
		name string
		q    statusview.Query
	}{
		{"first100", statusview.Query{Component: "wxcomp", Limit: 100}},
		{"middle100", statusview.Query{Component: "wxcomp", Limit: 100, Cursor: "wxa000000000005000"}},
		{"search", statusview.Query{Component: "wxcomp", Limit: 100, Search: "00000000004"}},
		{"unhealthy", statusview.Query{Component: "wxcomp", Limit: 100, Unhealthy: true}},
		{"max1000", statusview.Query{Component: "wxcomp", Limit: 1000}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var buf bytes.Buffer
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				buf.Reset()
				rec := &discard{h: http.Header{}, w: &buf}
				if err := statusview.WriteHTML(rec, httptest.NewRequest("GET", "/", nil), page(c.q)); err != nil {
					b.Fatal(err)
				}
			}
			// The process's CPU time per page (GC included): on a shared
			// machine wall time (ns/op) counts the other tenants too.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/page")
			b.ReportMetric(float64(buf.Len()), "bytes/page")
			if c.q.Unhealthy && !strings.Contains(buf.String(), "50 match") {
				b.Fatalf("the unhealthy filter found something else")
			}
		})
	}
}

type discard struct {
	h http.Header
	w *bytes.Buffer
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return d.w.Write(p) }
func (d *discard) WriteHeader(int)             {}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
