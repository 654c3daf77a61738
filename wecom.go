package wechat

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// WeCom (企业微信) support. A WeCom app is an account like any other: its
// corpid goes where an appid goes and its corpsecret where a secret goes,
// with token_api "work". The Caddyfile spells it
//
//	wechat {
//	    corpid     {env.CORP_ID}
//	    corpsecret {env.AGENT_SECRET}
//	}
//
// which is shorthand for appid/secret plus `token_api work`, with
// https://qyapi.weixin.qq.com as the default upstream.
//
// WeCom issues one token per application secret, so two agents of one
// corp are two accounts: accountKey hashes the secret, which gives them two
// pool keys, two caches and two refreshers without any WeCom-specific code.
const (
	tokenAPIWork        = "work"
	defaultWorkUpstream = "https://qyapi.weixin.qq.com"
)

// workRequest builds WeCom's token request. The corpsecret has to travel
// in the URL (WeCom has no body variant), so every error on this path goes
// through the fetcher's redaction, as for classic tokens.
func (f *fetcher) workRequest(ctx context.Context, base *url.URL) (*http.Request, error) {
	u := *base
	u.Path = "/cgi-bin/gettoken"
	u.RawQuery = url.Values{"corpid": {f.appid}, "corpsecret": {f.secret}}.Encode()
	return http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
}

// explainTokenErr turns a token endpoint's errcode into a message that
// says what to fix. The same number means different things on the two
// platforms: from WeCom's gettoken, 40001 is a wrong corpsecret, not a bad
// token, so it is a configuration error that the account's backoff paces;
// it must never trigger a token retry loop.
func explainTokenErr(api string, code int, msg string) string {
	var hint string
	if api == tokenAPIWork {
		switch code {
		case 40001, 40091:
			hint = "bad corpsecret: check the app's Secret in the WeCom admin console"
		case 40013:
			hint = "bad corpid"
		case 60020:
			hint = "this server's IP is not a trusted IP of the WeCom app (add it under the app's 企业可信IP)"
		case 301002:
			hint = "the token belongs to another WeCom application"
		}
	} else {
		switch code {
		case 40001, 40125:
			hint = "bad secret"
		case 40013:
			hint = "bad appid"
		case 40164, 61004:
			hint = "this server's IP is not in the account's IP whitelist"
		}
	}
	if hint == "" {
		return msg
	}
	return fmt.Sprintf("%s (%s)", hint, msg)
}
