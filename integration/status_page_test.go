package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/caddy-wechat/wechat/fakewechat"
)

const (
	spSecret       = "0123456789abcdef0123456789abcdef"
	spCompAppID    = "wxcomponent0000001"
	spCompSecret   = "component-secret-0123456789abcdef"
	spCompToken    = "callbacktoken0001"
	spCompAESKey   = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	spAuthorizers  = 12
	spRenewTTL     = 40 * time.Second
	spBrowserLimit = 5
)

func spMerchant(i int) string { return fmt.Sprintf("wxm%04d", i) }

// The status page in a real headless Chromium against a real Caddy and
// the fake WeChat: one account in each state (healthy with a JS-SDK
// ticket, renewing, backing off on 40164, at the fetch ceiling, store
// down), a component with a page of authorizers, a search with the
// unhealthy filter, and no credential anywhere on the page. A screenshot
// goes to the test's artifact directory (go test -artifacts).
func TestStatusPageInChromium(t *testing.T) {
	bin := chromium(t)
	healthy := spNewFake(t, fakewechat.Options{AppID: "wxhealthy000000001", Secret: spSecret})
	renewing := spNewFake(t, fakewechat.Options{AppID: "wxrenewing00000001", Secret: spSecret, TokenTTL: spRenewTTL})
	backoff := spNewFake(t, fakewechat.Options{AppID: "wxbackoff000000001", Secret: spSecret})
	backoff.FailTokens(40164, "")
	ceiling := spNewFake(t, fakewechat.Options{AppID: "wxceiling000000001", Secret: spSecret})
	down := spNewFake(t, fakewechat.Options{AppID: "wxstoredown0000001", Secret: spSecret})
	comp := spNewFake(t, fakewechat.Options{Component: fakewechat.ComponentOptions{AppID: spCompAppID, Secret: spCompSecret, Token: spCompToken, EncodingAESKey: spCompAESKey}})
	deadStore := fmt.Sprintf("127.0.0.1:%d", spFreePort(t)) // nothing listens there
	t.Setenv("SP_SECRET", spSecret)
	t.Setenv("SP_COMP_SECRET", spCompSecret)
	t.Setenv("SP_COMP_TOKEN", spCompToken)
	t.Setenv("SP_COMP_AES", spCompAESKey)

	account := func(appid, up, extra string) string {
		return "wechat {\n\t\t\tappid " + appid + "\n\t\t\tsecret {env.SP_SECRET}\n\t\t\tupstream " + up + "\n\t\t\t" + extra + "\n\t\t}"
	}
	g := spStartCaddy(t, `{
	admin {ADMIN}
	log {
		output file {LOG}
	}
}
{SITE} {
	handle /jssdk {
		wechat_jssdk {
			appid wxhealthy000000001
			secret {env.SP_SECRET}
			upstream `+healthy.URL+`
		}
	}
	handle /status* {
		basic_auth {
			ops $2a$04$NzzJypXPHejASU9DMRdVpe89vHarmj7xK6iXSa9T6bZk7VD1VN1Dq
		}
		wechat_status
	}
	handle_path /healthy/* {
		`+account("wxhealthy000000001", healthy.URL, "")+`
	}
	handle_path /renewing/* {
		`+account("wxrenewing00000001", renewing.URL, "fetch_timeout 30s")+`
	}
	handle_path /backoff/* {
		`+account("wxbackoff000000001", backoff.URL, "")+`
	}
	handle_path /ceiling/* {
		`+account("wxceiling000000001", ceiling.URL, "fetch_ceiling 1")+`
	}
	handle_path /down/* {
		`+account("wxstoredown0000001", down.URL, "memcache "+deadStore+"\n\t\t\tmemcache_timeout 50ms")+`
	}
	handle /wechat/component/callback {
		wechat_component_callback {
			appid `+spCompAppID+`
			secret {env.SP_COMP_SECRET}
			token {env.SP_COMP_TOKEN}
			aes_key {env.SP_COMP_AES}
			upstream `+comp.URL+`
		}
	}
	handle {
		wechat_component {
			appid `+spCompAppID+`
			secret {env.SP_COMP_SECRET}
			upstream `+comp.URL+`
		}
	}
}
`)
	start := time.Now()
	// A call through each account: its first token (or first failure).
	for _, p := range []string{"healthy", "renewing", "backoff", "ceiling", "down"} {
		spDo(t, "GET", g.URL+"/"+p+"/cgi-bin/user/info?openid=o1", "")
	}
	spWait(t, g, func(s spStatus) bool {
		n := 0
		for _, a := range s.Accounts {
			if a.HasToken || a.LastError != "" {
				n++
			}
		}
		return n == 5
	})
	// From now on the renewing account's fetch hangs: at half its 40 s
	// life its renewal starts and stays in flight (fetch_timeout 30s).
	renewing.SetTokenDelay(time.Minute)
	// The healthy account's JS-SDK ticket.
	if r := spDo(t, "POST", g.URL+"/jssdk", "url=https%3A%2F%2Fexample.com%2F", "Content-Type", "application/x-www-form-urlencoded"); r.status != 200 {
		t.Fatalf("jssdk: %d %s", r.status, r.body)
	}
	// The component: a ticket, twelve authorizers; three revoked on the
	// fake and noticed by a call each (40001, then api_authorizer_token
	// answers 61003): unhealthy.
	cb := g.URL + "/wechat/component/callback"
	ticket, err := comp.PushTicket(cb)
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{spSecret, spCompSecret, spCompToken, spCompAESKey, ticket,
		healthy.CurrentStable(), ceiling.CurrentStable(), down.CurrentStable(), renewing.CurrentStable()}
	for i := 1; i <= spAuthorizers; i++ {
		if _, err := comp.PushAuthorized(cb, spMerchant(i)); err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, comp.RefreshTokenOf(spMerchant(i)), comp.CurrentAuthorizerToken(spMerchant(i)))
	}
	sick := []int{3, 7, 11}
	for _, i := range sick {
		comp.Unauthorize(spMerchant(i))
		r := spDo(t, "GET", g.URL+"/authorizer/"+spMerchant(i)+"/cgi-bin/user/info?openid=o1", "")
		if !strings.Contains(r.body, "40001") && !strings.Contains(r.body, "61003") {
			t.Fatalf("a revoked authorizer's call: %d %s", r.status, r.body)
		}
	}
	// Wait for the renewal to be due (and in flight), well before the
	// token expires.
	time.Sleep(time.Until(start.Add(spRenewTTL/2 + time.Second)))

	// A browser cannot open Caddy's admin endpoint (it refuses any
	// request with Sec-Fetch-Mode and no allowed Origin: its cross-site
	// guard), so people use the wechat_status handler, here behind
	// basic_auth; the admin API gives the same page to a client that asks.
	status := "http://ops:hello@" + strings.TrimPrefix(g.URL, "http://") + "/status"
	// The backing-off account is called again: its backoff (5 s after the
	// first failure) has run out, so this call fetches, fails, and backs
	// off for 10 s.
	spDo(t, "GET", g.URL+"/backoff/cgi-bin/user/info?openid=o1", "")
	dump := browse(t, bin, status+"?limit="+fmt.Sprint(spBrowserLimit), "--dump-dom")
	dom := spParse(t, dump)
	if !strings.Contains(dump, "caddy-wechat status") {
		t.Fatalf("chromium got something else: %.2000s", dump)
	}
	if time.Since(start) > spRenewTTL-2*time.Second {
		t.Logf("slow machine: the renewing account's token may be near its expiry")
	}

	// Accounts: one row per credential, its state in words.
	for _, c := range []struct{ appid, cred, state, text string }{
		{"wxhealthy000000001", "access_token", "healthy", "1 / 200"},
		{"wxhealthy000000001", "ticket:jsapi", "healthy", "in 1h59m"},
		{"wxrenewing00000001", "access_token", "renewing", "due "},
		{"wxbackoff000000001", "access_token", "backing off", "add " + fakewechat.WhitelistIP + " to the account's IP whitelist"},
		{"wxceiling000000001", "access_token", "at the ceiling", "1 / 1"},
		{"wxstoredown0000001", "access_token", "store down", "this server"}, // placeholder, replaced below
	} {
		acct := spFind(dom, "tbody", "data-appid", c.appid)
		if acct == nil {
			t.Errorf("no account %s on the page", c.appid)
			continue
		}
		row := spFind(acct, "tr", "data-credential", c.cred)
		if row == nil {
			t.Errorf("%s: no %s row", c.appid, c.cred)
			continue
		}
		if got := spAttr(row, "data-state"); !strings.HasPrefix(got, c.state) {
			t.Errorf("%s %s: state %q, want %q", c.appid, c.cred, got, c.state)
		}
		if c.appid == "wxstoredown0000001" {
			if s := spFind(acct, "span", "data-store", "down"); s == nil || !strings.Contains(spText(s), "DOWN") {
				t.Errorf("the store-down account does not say its store is down: %s", spText(acct))
			}
			continue
		}
		if txt := spText(row); !strings.Contains(txt, c.text) {
			t.Errorf("%s %s: row %q lacks %q", c.appid, c.cred, txt, c.text)
		}
	}
	if s := spFind(spFind(dom, "tbody", "data-appid", "wxhealthy000000001"), "span", "data-store", "ok"); s == nil || !strings.Contains(spText(s), "this process only") {
		t.Error("the healthy account's store line is wrong")
	}

	// The component line and the first page of its authorizers.
	crow := spFind(dom, "tr", "data-appid", spCompAppID)
	if crow == nil || !strings.Contains(spText(crow), fmt.Sprint(spAuthorizers)) {
		t.Fatalf("component row: %v", spText(crow))
	}
	if a := spFind(crow, "a", "href", "?component="+spCompAppID+"&unhealthy=1"); a == nil || spText(a) != "3" {
		t.Errorf("component row: the unhealthy count is not a link to the 3: %s", spText(crow))
	}
	rows := spFindAll(dom, "tr", "class", "authorizer")
	if len(rows) != spBrowserLimit || spAttr(rows[0], "data-appid") != spMerchant(1) || spAttr(rows[4], "data-appid") != spMerchant(5) {
		t.Fatalf("first page: %d rows", len(rows))
	}
	if st := spAttr(rows[2], "data-state"); st == "healthy" || !strings.Contains(spText(rows[2]), "61003") {
		t.Errorf("%s (revoked): state %q, row %q", spMerchant(3), st, spText(rows[2]))
	}
	if st := spAttr(rows[1], "data-state"); st != "healthy" {
		t.Errorf("%s: state %q", spMerchant(2), st)
	}
	next := spFind(dom, "a", "id", "next")
	if next == nil || spAttr(next, "href") != "?component="+spCompAppID+"&cursor="+spMerchant(5)+"&limit=5" {
		t.Fatalf("next link: %v", spAttr(next, "href"))
	}
	// The search form is a plain GET form: its fields, filled in as a
	// person would, give the URL of the next browser run.
	form := spFind(dom, "form", "method", "get")
	if form == nil || spFind(form, "input", "name", "q") == nil || spFind(form, "input", "name", "unhealthy") == nil || spFind(form, "input", "name", "component") == nil {
		t.Fatal("no search form with q, unhealthy and component")
	}
	if len(spFindAll(dom, "script", "", "")) != 0 {
		t.Error("the page has a script")
	}
	shot := filepath.Join(t.ArtifactDir(), "status.png")
	browse(t, bin, status+"?limit="+fmt.Sprint(spBrowserLimit), "--screenshot="+shot, "--window-size=1280,900")
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10000 {
		t.Fatalf("screenshot: %v", err)
	}
	t.Logf("screenshot: %s", shot)
	if dst := os.Getenv("WECHAT_STATUS_SCREENSHOT"); dst != "" { // how docs/status.png is made
		if b, err := os.ReadFile(shot); err == nil {
			os.WriteFile(dst, b, 0o644)
		}
	}

	// The search with the unhealthy filter: wxm001x, unhealthy: wxm0011.
	q := url.Values{"component": {spCompAppID}, "q": {"wxm001"}, "unhealthy": {"1"}}
	dom2 := spParse(t, browse(t, bin, status+"?"+q.Encode(), "--dump-dom"))
	rows = spFindAll(dom2, "tr", "class", "authorizer")
	if len(rows) != 1 || spAttr(rows[0], "data-appid") != spMerchant(11) {
		var got []string
		for _, r := range rows {
			got = append(got, spAttr(r, "data-appid"))
		}
		t.Fatalf("search wxm001 unhealthy: %v, want [%s]", got, spMerchant(11))
	}
	if m := spFind(dom2, "p", "id", "matched"); m == nil || !strings.HasPrefix(spText(m), "1 match") {
		t.Errorf("matched line: %q", spText(m))
	}
	if box := spFind(dom2, "input", "name", "unhealthy"); box == nil || !spHas(box, "checked") {
		t.Error("the filter's checkbox is not checked on the filtered page")
	}

	// The same page from the wechat_status handler, behind basic_auth,
	// and the JSON with the filter: what `caddy wechat status` reads.
	if r := spDo(t, "GET", g.URL+"/status", ""); r.status != 401 {
		t.Errorf("wechat_status without credentials: %d", r.status)
	}
	r := spDo(t, "GET", g.URL+"/status?unhealthy=1", "", "Authorization", "Basic b3BzOmhlbGxv") // ops:hello
	if r.status != 200 || !strings.Contains(r.header.Get("Content-Security-Policy"), "default-src 'none'") || !strings.Contains(r.body, `data-appid="`+spMerchant(7)+`"`) || strings.Contains(r.body, `data-appid="`+spMerchant(8)+`"`) {
		t.Errorf("wechat_status: %d %v", r.status, r.header)
	}
	// Hostile input: a search that is not an appid is refused, not echoed;
	// the page is read-only.
	if h := spDo(t, "GET", g.URL+"/status?q=%3Cscript%3Ealert(1)%3C/script%3E", "", "Authorization", "Basic b3BzOmhlbGxv"); h.status != 400 || strings.Contains(h.body, "<script") {
		t.Errorf("a hostile search: %d %q", h.status, h.body)
	}
	if h := spDo(t, "POST", g.URL+"/status", "", "Authorization", "Basic b3BzOmhlbGxv"); h.status != 405 {
		t.Errorf("POST to wechat_status: %d", h.status)
	}
	admin := "http://" + g.Admin + "/wechat/status"
	if a := spDo(t, "GET", admin+"/authorizers?unhealthy=1", "", "Accept", "text/html"); a.status != 200 || !strings.Contains(a.body, `data-appid="`+spMerchant(11)+`"`) || a.header.Get("Content-Security-Policy") == "" {
		t.Errorf("admin API, Accept: text/html: %d %.300s", a.status, a.body)
	}
	j := spDo(t, "GET", admin+"/authorizers?unhealthy=1", "")
	var page struct {
		Matched int `json:"matched"`
		Items   []struct {
			AppID string `json:"authorizer_appid"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(j.body), &page); err != nil || page.Matched != 3 || len(page.Items) != 3 {
		t.Errorf("JSON with unhealthy=1: %s", j.body)
	}

	// No credential on any page, the DOM or the HTML.
	secrets = append(secrets, renewing.CurrentStable())
	for _, s := range secrets {
		for name, hay := range map[string]string{"status page": spRender(dom), "search page": spRender(dom2), "wechat_status": r.body} {
			if s != "" && strings.Contains(hay, s) {
				t.Errorf("a credential (%.8s…) is on the %s", s, name)
			}
		}
	}
}

type spStatus struct {
	Accounts []struct {
		AppID     string `json:"appid"`
		HasToken  bool   `json:"has_token"`
		LastError string `json:"last_error"`
	} `json:"accounts"`
}

func spWait(t *testing.T, g *spCaddy, ok func(spStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var s spStatus
		r := spDo(t, "GET", "http://"+g.Admin+"/wechat/status", "")
		if err := json.Unmarshal([]byte(r.body), &s); err == nil && ok(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never got there: %s", r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type spResult struct {
	status int
	header http.Header
	body   string
}

func spDo(t testing.TB, method, u, body string, hdr ...string) spResult {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return spResult{resp.StatusCode, resp.Header, string(b)}
}

// DOM helpers over what Chromium dumped.

func spParse(t testing.TB, s string) *html.Node {
	t.Helper()
	n, err := html.Parse(strings.NewReader(s))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func spAttr(n *html.Node, key string) string {
	if n == nil {
		return ""
	}
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func spHas(n *html.Node, key string) bool {
	for _, a := range n.Attr {
		if a.Key == key {
			return true
		}
	}
	return false
}

// spFindAll: elements named tag whose attribute key is val (key "": any).
func spFindAll(root *html.Node, tag, key, val string) []*html.Node {
	var out []*html.Node
	if root == nil {
		return nil
	}
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == tag && (key == "" || spAttr(n, key) == val) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(root)
	return out
}

func spFind(root *html.Node, tag, key, val string) *html.Node {
	if all := spFindAll(root, tag, key, val); len(all) > 0 {
		return all[0]
	}
	return nil
}

func spText(n *html.Node) string {
	if n == nil {
		return ""
	}
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(b.String()), " ")
}

func spRender(n *html.Node) string {
	var b bytes.Buffer
	html.Render(&b, n)
	return b.String()
}
