package wechat

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Stopping Caddy does not wait for a hung background fetch: the account's
// Destruct cancels it (issue 11: SIGTERM used to wait up to 23 s).
func TestStopDoesNotWaitForHungFetch(t *testing.T) {
	f, g := setup(t, "fetch_timeout 1h")
	if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
		t.Fatal(r.Body)
	}
	a := onlyAccount(t)
	f.SetTokenDelay(time.Hour)
	defer f.SetTokenDelay(0)
	refreshed := make(chan error, 1)
	go func() { _, err := a.tokens.Refresh(context.Background()); refreshed <- err }()
	time.Sleep(50 * time.Millisecond) // let the refresh reach the fake (either way the test holds)
	stopped := make(chan struct{})
	go func() { resetAccounts(t); close(stopped) }()
	guard := time.After(30 * time.Second) // a deadlock guard, not a timing assertion
	select {
	case <-stopped:
	case <-guard:
		t.Fatal("stop waited for a fetch with a 1 h deadline")
	}
	select {
	case err := <-refreshed:
		if err == nil {
			t.Fatal("the hung refresh succeeded after stop")
		}
	case <-guard:
		t.Fatal("the hung refresh outlived the account")
	}
}

// A request to a host that is not a token endpoint is logged once.
func TestWarnOnceForHostOutsideTokenEndpoints(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	tr := &Transport{logger: zap.New(core), acct: &sharedAccount{appid: "wx"}}
	tr.bases = []*url.URL{{Scheme: "https", Host: "api.weixin.qq.com"}}
	tr.checkHost("api.weixin.qq.com")
	tr.checkHost("api2.weixin.qq.com")
	tr.checkHost("api2.weixin.qq.com")
	if n := logs.FilterMessageSnippet("not among the token endpoints").Len(); n != 1 {
		t.Fatalf("%d warnings; want 1", n)
	}
}

// quota_warn: one warning a day once fetches pass the configured share of
// the classic quota (2000/day).
func TestQuotaWarnShare(t *testing.T) {
	f := newFake(t)
	a, err := newAccount("quota", accountSettings{appid: testAppID, secret: testSecret, api: tokenAPIClassic, minAge: -1, ceiling: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Destruct()
	core, logs := observer.New(zap.WarnLevel)
	u, _ := url.Parse(f.URL)
	a.attach(&binding{
		src:    &credential.AccessTokenSource{Bases: []*url.URL{u}, AppID: testAppID, Secret: testSecret, API: tokenAPIClassic},
		logger: zap.New(core),
		m:      &metrics{appid: testAppID, account: a.label, quotaWarn: 0.002}, // 4 fetches
	})
	ctx := context.Background()
	for range 6 {
		tok, err := a.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		a.Invalidate(tok)
	}
	if n := logs.FilterMessageSnippet("using up the daily quota").Len(); n != 1 {
		t.Fatalf("%d quota warnings after 6 fetches with a 4-fetch share; want 1", n)
	}
}

// Everything that changes how a credential is fetched or shared names a
// different account.
func TestAccountKeyCoversFetchSettings(t *testing.T) {
	base := accountKey("wx", "s", "stable", "memcache:a", "https://api.weixin.qq.com,|10s")
	for _, k := range []string{
		accountKey("wx", "s2", "stable", "memcache:a", "https://api.weixin.qq.com,|10s"),
		accountKey("wx", "s", "classic", "memcache:a", "https://api.weixin.qq.com,|10s"),
		accountKey("wx", "s", "stable", "memcache:b", "https://api.weixin.qq.com,|10s"),
		accountKey("wx", "s", "stable", "memcache:a|p2:", "https://api.weixin.qq.com,|10s"),
		accountKey("wx", "s", "stable", "memcache:a", "https://api2.weixin.qq.com,|10s"),
		accountKey("wx", "s", "stable", "memcache:a", "https://api.weixin.qq.com,|5s"),
	} {
		if k == base {
			t.Fatalf("two settings share the key %s", k)
		}
	}
	if strings.Contains(base, "s\x00") || strings.Contains(base, ":s:") {
		t.Fatal("the key holds the secret")
	}
}
