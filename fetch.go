package wechat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Token APIs. Stable is the default: it hands every caller the same token,
// so nothing outside the gateway can knock ours out by fetching.
const (
	tokenAPIStable  = "stable"
	tokenAPIClassic = "classic"
)

// fetcher calls WeChat's token endpoint. It is rebuilt on every provision
// and swapped into the long-lived account, so a reload that changes
// timeouts or upstreams takes effect without dropping the token.
type fetcher struct {
	rt     http.RoundTripper
	bases  []*url.URL // scheme://host[:port], tried in order
	appid  string
	secret string
	api    string
	now    func() time.Time

	quotaWarn float64 // share of a daily quota past which to warn; 0: budgetWarnShare
}

// wechatError is an error answer from WeChat: {"errcode":N,"errmsg":"..."}.
type wechatError struct {
	Code int
	Msg  string
}

func (e *wechatError) Error() string {
	return fmt.Sprintf("WeChat token endpoint answered errcode %d: %s", e.Code, e.Msg)
}

// tokenAnswer is the body of a token endpoint answer.
type tokenAnswer struct {
	AccessToken string      `json:"access_token"`
	ExpiresIn   json.Number `json:"expires_in"`
	ErrCode     int         `json:"errcode"`
	ErrMsg      string      `json:"errmsg"`
}

// maxTokenBody bounds how much of a token answer is read: real answers are
// about 200 bytes, so anything larger is garbage.
const maxTokenBody = 64 << 10

// fetch gets a token from the first base that answers. A network error or
// an HTTP 5xx moves on to the next base; a WeChat errcode does not, since
// every domain would give the same answer.
func (f *fetcher) fetch(ctx context.Context, force bool) (*tokenEntry, error) {
	var errs []error
	for _, base := range f.bases {
		e, err := f.fetchFrom(ctx, base, force)
		if err == nil {
			return e, nil
		}
		var we *wechatError
		if errors.As(err, &we) || ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (f *fetcher) fetchFrom(ctx context.Context, base *url.URL, force bool) (*tokenEntry, error) {
	req, err := f.request(ctx, base, force)
	if err != nil {
		return nil, f.redact(err)
	}
	start := f.now()
	resp, err := f.rt.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("token endpoint %s: %w", base.Host, f.redact(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody+1))
	if err != nil {
		return nil, fmt.Errorf("token endpoint %s: reading answer: %w", base.Host, f.redact(err))
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("token endpoint %s answered HTTP %d", base.Host, resp.StatusCode)
	}
	if len(body) > maxTokenBody {
		return nil, fmt.Errorf("token endpoint %s answered more than %d bytes", base.Host, maxTokenBody)
	}
	var ans tokenAnswer
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&ans); err != nil {
		return nil, fmt.Errorf("token endpoint %s answered something that is not JSON (%s, %d bytes)",
			base.Host, resp.Header.Get("Content-Type"), len(body))
	}
	if ans.ErrCode != 0 {
		return nil, &wechatError{Code: ans.ErrCode, Msg: f.redactString(explainTokenErr(f.api, ans.ErrCode, ans.ErrMsg))}
	}
	if ans.AccessToken == "" {
		return nil, fmt.Errorf("token endpoint %s answered no access_token", base.Host)
	}
	expiresIn, _ := ans.ExpiresIn.Int64()
	return newEntry(ans.AccessToken, expiresIn, start, "fetch"), nil
}

// request builds the token request. Stable takes the secret in a JSON body;
// classic needs it in the URL, which is why every error is redacted.
func (f *fetcher) request(ctx context.Context, base *url.URL, force bool) (*http.Request, error) {
	u := *base
	if f.api == tokenAPIWork {
		return f.workRequest(ctx, base)
	}
	if f.api == tokenAPIClassic {
		u.Path = "/cgi-bin/token"
		u.RawQuery = url.Values{
			"grant_type": {"client_credential"},
			"appid":      {f.appid},
			"secret":     {f.secret},
		}.Encode()
		return http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	}
	u.Path = "/cgi-bin/stable_token"
	body, err := json.Marshal(struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}{"client_credential", f.appid, f.secret, force})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// redact turns any error into a plain one whose text cannot hold the
// secret: a *url.Error prints the whole URL, query included.
func (f *fetcher) redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return context.DeadlineExceeded
	}
	return errors.New(f.redactString(err.Error()))
}

func (f *fetcher) redactString(s string) string {
	if f.secret == "" {
		return s
	}
	s = strings.ReplaceAll(s, f.secret, "[secret]")
	return strings.ReplaceAll(s, url.QueryEscape(f.secret), "[secret]")
}

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
