package integration

import (
	"bytes"
	"strings"
	"testing"

	"github.com/caddy-wechat/wechat/fakewechat"
	"github.com/caddy-wechat/wechat/wechatcmd"
)

// `caddy wechat status` against a running Caddy: the accounts as a table
// with their state and what to do, then the component's unhealthy
// authorizers, and no credential.
func TestWechatStatusCommand(t *testing.T) {
	ok := spNewFake(t, fakewechat.Options{AppID: "wxstatusok00000001", Secret: spSecret})
	bad := spNewFake(t, fakewechat.Options{AppID: "wxstatusbad0000001", Secret: spSecret})
	bad.FailTokens(40125, "")
	comp := spNewFake(t, fakewechat.Options{Component: fakewechat.ComponentOptions{AppID: spCompAppID, Secret: spCompSecret, Token: spCompToken, EncodingAESKey: spCompAESKey}})
	t.Setenv("SP_SECRET", spSecret)
	t.Setenv("SP_COMP_SECRET", spCompSecret)
	t.Setenv("SP_COMP_TOKEN", spCompToken)
	t.Setenv("SP_COMP_AES", spCompAESKey)
	g := spStartCaddy(t, `{
	admin {ADMIN}
	log {
		output file {LOG}
	}
}
{SITE} {
	handle_path /ok/* {
		wechat {
			appid wxstatusok00000001
			secret {env.SP_SECRET}
			upstream `+ok.URL+`
		}
	}
	handle_path /bad/* {
		wechat {
			appid wxstatusbad0000001
			secret {env.SP_SECRET}
			upstream `+bad.URL+`
		}
	}
	handle /cb {
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
	spDo(t, "GET", g.URL+"/ok/cgi-bin/user/info?openid=o1", "")
	spDo(t, "GET", g.URL+"/bad/cgi-bin/user/info?openid=o1", "")
	if _, err := comp.PushTicket(g.URL + "/cb"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if _, err := comp.PushAuthorized(g.URL+"/cb", spMerchant(i)); err != nil {
			t.Fatal(err)
		}
	}
	comp.Unauthorize(spMerchant(2))
	spDo(t, "GET", g.URL+"/authorizer/"+spMerchant(2)+"/cgi-bin/user/info?openid=o1", "")

	var out bytes.Buffer
	code, err := wechatcmd.Status(&out, g.Admin)
	t.Logf("caddy wechat status:\n%s", out.String())
	if err != nil || code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	text := out.String()
	row := func(prefix string) string {
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		return ""
	}
	if l := row("ACCOUNT"); !strings.Contains(l, "STATE") || !strings.Contains(l, "FETCHES TODAY") {
		t.Errorf("header: %q", l)
	}
	if l := row("wxstatusok00000001"); !strings.Contains(l, "access_token") || !strings.Contains(l, "healthy") || !strings.Contains(l, "1 / 200") {
		t.Errorf("healthy account: %q", l)
	}
	if l := row("wxstatusbad0000001"); !strings.Contains(l, "backing off") || !strings.Contains(l, "wrong secret: fix secret") {
		t.Errorf("failing account: %q", l)
	}
	if l := row("component " + spCompAppID); !strings.Contains(l, "3 authorizers, 1 unhealthy") || !strings.Contains(l, "ticket stored") {
		t.Errorf("component: %q", l)
	}
	if l := row(spMerchant(2)); l == "" || !strings.Contains(l, "61003") {
		t.Errorf("unhealthy authorizer: %q", l)
	}
	if row(spMerchant(1)) != "" || row(spMerchant(3)) != "" {
		t.Error("a healthy authorizer is listed as unhealthy")
	}
	for _, s := range []string{spSecret, spCompSecret, ok.CurrentStable(), comp.RefreshTokenOf(spMerchant(1)), comp.CurrentAuthorizerToken(spMerchant(1))} {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("a credential (%.6s…) in the output", s)
		}
	}
}
