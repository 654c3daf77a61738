package integration

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// jssdkSite has the gateway at / and the signer at /jssdk, both for the
// same account, so they must share one token.
func jssdkSite(upstream, extra string) string {
	return siteConfig(`	handle /jssdk {
		wechat_jssdk {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream ` + upstream + `
			` + extra + `
		}
	}
	handle {
		wechat {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream ` + upstream + `
		}
	}`)
}

// ticketOf asks the fake directly for the account's ticket, which it keeps
// per account and type, so the test can recompute the signature.
func ticketOf(t *testing.T, f *fakeWeChat, typ string) string {
	t.Helper()
	r := get(t, f.URL+"/cgi-bin/ticket/getticket?type="+typ+"&access_token="+url.QueryEscape(f.CurrentStable()))
	tk, _ := r.JSON["ticket"].(string)
	if tk == "" {
		t.Fatalf("no ticket from the fake: %s", r.Body)
	}
	return tk
}

func sha1hex(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestJSSDKSignSharesTokenAndTicket(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	f.SetTokenDelay(100 * time.Millisecond)
	g := startCaddy(t, jssdkSite(f.URL, ""))
	page := "https://example.com/path/?a=1&b=%E4%B8%AD#section"
	var bad atomic.Int32
	parallel(50, func(int) {
		r := get(t, g.URL+"/jssdk?url="+url.QueryEscape(page))
		if r.Status != 200 || r.JSON["signature"] == nil {
			bad.Add(1)
		}
	})
	if bad.Load() != 0 {
		t.Fatalf("%d of 50 cold sign requests failed", bad.Load())
	}
	if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
		t.Fatalf("gateway: %s", r.Body)
	}
	if n, k := f.Fetches("stable"), f.Fetches("ticket"); n != 1 || k != 1 {
		t.Errorf("token fetches %d, ticket fetches %d; want 1 and 1 for one account", n, k)
	}
	if n := len(statusAccounts(t, g)); n != 1 {
		t.Errorf("%d accounts in the pool, want 1 (wechat and wechat_jssdk share it)", n)
	}

	r := do(t, http.MethodPost, g.URL+"/jssdk", []byte("url="+url.QueryEscape(page)), "Content-Type", "application/x-www-form-urlencoded")
	ts, _ := r.JSON["timestamp"].(float64)
	nonce, _ := r.JSON["nonceStr"].(string)
	want := sha1hex(fmt.Sprintf("jsapi_ticket=%s&noncestr=%s&timestamp=%d&url=%s",
		ticketOf(t, f, "jsapi"), nonce, int64(ts), "https://example.com/path/?a=1&b=%E4%B8%AD"))
	if r.JSON["appId"] != testAppID || len(nonce) != 16 || r.JSON["signature"] != want {
		t.Errorf("sign answer %s; want signature %s", r.Body, want)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Error("signature answer is cacheable")
	}
	if r := get(t, g.URL+"/jssdk?url=not-a-url"); r.Status != http.StatusBadRequest {
		t.Errorf("relative url: %d %s", r.Status, r.Body)
	}
	if strings.Contains(readFile(t, g.LogFile), ticketOf(t, f, "jsapi")) {
		t.Error("ticket in the log")
	}
}

func TestJSSDKCardTicket(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	g := startCaddy(t, jssdkSite(f.URL, ""))
	r := get(t, g.URL+"/jssdk?type=wx_card&card_id=CARD1&openid=o1")
	ts, _ := r.JSON["timestamp"].(string)
	nonce, _ := r.JSON["nonce_str"].(string)
	want := cardSignature(ticketOf(t, f, "wx_card"), ts, nonce, "CARD1", "o1")
	if r.Status != 200 || r.JSON["signature"] != want {
		t.Errorf("card answer %s; want %s", r.Body, want)
	}
	if r := get(t, g.URL+"/jssdk?type=other&url=http://x/"); r.Status != http.StatusBadRequest {
		t.Errorf("unknown type: %d", r.Status)
	}
}

func TestJSSDKRetriesOnBadToken(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	g := startCaddy(t, jssdkSite(f.URL, ""))
	get(t, g.URL+"/cgi-bin/user/info") // the token is cached, no ticket yet
	f.RevokeAll()                      // the cached token is now bad
	r := get(t, g.URL+"/jssdk?url="+url.QueryEscape("http://example.com/"))
	if r.Status != 200 || r.JSON["signature"] == nil {
		t.Fatalf("sign after revocation: %d %s", r.Status, r.Body)
	}
	// getticket is rejected once; the probe that confirms the token is
	// bad before it is dropped is counted apart by the fake.
	if f.Rejected(40001) != 1 || f.Fetches("probe_rejected") != 1 || f.Fetches("stable") != 2 || f.Fetches("ticket") != 2 {
		t.Errorf("rejected %d, probes rejected %d, token fetches %d, ticket calls %d; want 1, 1, 2, 2",
			f.Rejected(40001), f.Fetches("probe_rejected"), f.Fetches("stable"), f.Fetches("ticket"))
	}
}

func TestJSSDKRawTokenOptIn(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	g := startCaddy(t, siteConfig(`	@trusted remote_ip 127.0.0.1/32
	@other not remote_ip 127.0.0.1/32
	handle /internal/token {
		respond @other 403
		wechat_jssdk @trusted {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream `+f.URL+`
			raw_token
		}
	}
	handle /jssdk {
		wechat_jssdk {
			appid {env.TEST_WECHAT_APPID}
			secret {env.TEST_WECHAT_SECRET}
			upstream `+f.URL+`
		}
	}`))
	r := get(t, g.URL+"/internal/token")
	if r.Status != 200 || r.JSON["access_token"] != f.CurrentStable() || r.JSON["expires_in"].(float64) < 7000 {
		t.Fatalf("raw token: %d %s", r.Status, r.Body)
	}
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Error("raw token answer is cacheable")
	}
	// Without raw_token the handler never shows the token.
	r = get(t, g.URL+"/jssdk?url="+url.QueryEscape("http://example.com/"))
	if strings.Contains(string(r.Body), f.CurrentStable()) || r.JSON["access_token"] != nil {
		t.Errorf("signer leaked the token: %s", r.Body)
	}
	if f.Fetches("stable") != 1 {
		t.Errorf("fetches = %d, want 1", f.Fetches("stable"))
	}
	if strings.Contains(readFile(t, g.LogFile), f.CurrentStable()) {
		t.Error("token in the log")
	}
}

// cardSignature is the card (addCard cardExt) signature, computed here
// independently of the gateway: sha1 of the non-empty values sorted as
// strings and concatenated.
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

// The ticket is renewed ahead, in the background: with an 8 s ticket the
// scheduler fetches the next one at 4 s, no request waits for it, and the
// next signature uses it. (The root used to test this by calling the
// cache's Refresh itself; here the real scheduler does it.)
func TestJSSDKTicketRefreshAhead(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	var issued atomic.Int32
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/cgi-bin/ticket/getticket" {
			return false
		}
		n := issued.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"errcode":0,"errmsg":"ok","ticket":"TKT_%d","expires_in":8}`, n)
		return true
	})
	g := startCaddy(t, jssdkSite(f.URL, ""))
	const page = "https://example.com/"
	sign := func() result {
		t.Helper()
		r := get(t, g.URL+"/jssdk?url="+url.QueryEscape(page))
		if r.Status != 200 {
			t.Fatalf("sign: %d %s", r.Status, r.Body)
		}
		return r
	}
	signedWith := func(r result, ticket string) bool {
		ts, _ := r.JSON["timestamp"].(float64)
		nonce, _ := r.JSON["nonceStr"].(string)
		return r.JSON["signature"] == sha1hex(fmt.Sprintf("jsapi_ticket=%s&noncestr=%s&timestamp=%d&url=%s", ticket, nonce, int64(ts), page))
	}
	if r := sign(); !signedWith(r, "TKT_1") {
		t.Fatalf("first signature not made with the first ticket: %s", r.Body)
	}
	if st := ticketStatus(t, g, "ticket:jsapi"); st.RenewAt.IsZero() || !st.RenewAt.Before(st.ExpiresAt) {
		t.Fatalf("no renewal ahead of expiry scheduled: renew_at %s, expires_at %s", st.RenewAt, st.ExpiresAt)
	}
	deadline := time.Now().Add(15 * time.Second) // a guard, not a timing assertion
	for issued.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the ticket was not renewed in the background")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := sign()
	if n := issued.Load(); n != 2 {
		t.Fatalf("%d tickets fetched; want 2 (the signature after the renewal fetched none)", n)
	}
	if !signedWith(r, "TKT_2") {
		t.Errorf("the renewed ticket is not the one signing: %s", r.Body)
	}
}

// ticketStatus is the status row of the one account's ticket named name.
func ticketStatus(t *testing.T, g *runningCaddy, name string) (st struct {
	Name      string    `json:"name"`
	ExpiresAt time.Time `json:"expires_at"`
	RenewAt   time.Time `json:"renew_at"`
}) {
	t.Helper()
	r := get(t, "http://"+g.Admin+"/wechat/status")
	var s struct {
		Accounts []struct {
			Tickets []json.RawMessage `json:"tickets"`
		} `json:"accounts"`
	}
	if err := json.Unmarshal(r.Body, &s); err != nil || len(s.Accounts) != 1 {
		t.Fatalf("status: want one account (%v): %s", err, r.Body)
	}
	for _, raw := range s.Accounts[0].Tickets {
		if err := json.Unmarshal(raw, &st); err == nil && st.Name == name {
			return st
		}
	}
	t.Fatalf("no ticket %s in the status: %s", name, r.Body)
	return st
}
