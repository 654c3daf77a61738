package wechat

import (
	"context"
	"net/url"
	"testing"

	"github.com/caddy-wechat/wechat/internal/credential"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

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
