package wechat

import (
	"context"
	"net/url"
	"testing"
	"time"

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
	tr := &Transport{logger: zap.New(core), acct: &account{appid: "wx"}}
	tr.bases = []*url.URL{{Scheme: "https", Host: "api.weixin.qq.com"}}
	tr.checkHost("api.weixin.qq.com")
	tr.checkHost("api2.weixin.qq.com")
	tr.checkHost("api2.weixin.qq.com")
	if n := logs.FilterMessageSnippet("not among the token endpoints").Len(); n != 1 {
		t.Fatalf("%d warnings; want 1", n)
	}
}
