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
