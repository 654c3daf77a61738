package credential

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

// Source fetches one credential from WeChat. It holds no state of its
// own beyond its configuration: caching, backoff, sharing and refresh are
// the Cache's. Compare oauth2.TokenSource; a Cache is the ReuseTokenSource.
type Source interface {
	Fetch(ctx context.Context, opt FetchOptions) (*Token, error)
}

// FetchOptions is what a Cache hands a Source for one fetch.
type FetchOptions struct {
	// Force asks for a new credential even if the current one is valid
	// (stable force_refresh). Only a Forcer is ever asked.
	Force bool
	// Aux reads and writes the credential's durable auxiliary values: a
	// component_verify_ticket, an authorizer_refresh_token that WeChat
	// rotates on each fetch. They live sealed in the Cache's store, or in
	// memory without one.
	Aux Aux
}

// Aux is a credential's small durable key-value space.
type Aux interface {
	// Get returns the value under name, or ErrNotFound.
	Get(ctx context.Context, name string) ([]byte, error)
	// Put stores v under name; it is sealed like the credential.
	Put(ctx context.Context, name string, v []byte) error
}

// Forcer is a Source that can be told to issue a new credential at once.
type Forcer interface {
	CanForce() bool
}

// Prober is a Source that can check a credential cheaply, so that an
// errcode 40001 from one API call is not taken on its own as proof that
// the credential is bad (issue 10 §2). valid is only meaningful when err
// is nil; an error means "unknown".
type Prober interface {
	Probe(ctx context.Context, t *Token) (valid bool, err error)
}

// Token APIs of the access_token source.
const (
	APIStable  = "stable"
	APIClassic = "classic"
	APIWork    = "work" // WeCom gettoken
)

// maxBody bounds how much of a token answer is read: real answers are
// about 200 bytes, so anything larger is garbage.
const maxBody = 64 << 10

// AccessTokenSource fetches an access_token: stable, classic or WeCom's.
// Every error it returns is redacted of the secret, since a Go *url.Error
// quotes the URL, and classic and WeCom carry the secret there.
type AccessTokenSource struct {
	RT     http.RoundTripper
	Bases  []*url.URL // scheme://host[:port], tried in order
	AppID  string
	Secret string
	API    string // APIStable (default), APIClassic or APIWork
	Now    func() time.Time
}

func (s *AccessTokenSource) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// CanForce: only stable tokens have force_refresh.
func (s *AccessTokenSource) CanForce() bool { return s.api() == APIStable }

func (s *AccessTokenSource) api() string {
	if s.API == "" {
		return APIStable
	}
	return s.API
}

// Fetch gets a token from the first base that answers. A network error
// or HTTP 5xx moves on to the next base; a WeChat errcode does not, since
// every domain would give the same answer.
func (s *AccessTokenSource) Fetch(ctx context.Context, opt FetchOptions) (*Token, error) {
	return eachBase(ctx, s.Bases, func(base *url.URL) (*Token, error) {
		req, err := s.request(ctx, base, opt.Force)
		if err != nil {
			return nil, errors.New(s.Redact(err.Error()))
		}
		start := s.now()
		var ans struct {
			AccessToken string      `json:"access_token"`
			ExpiresIn   json.Number `json:"expires_in"`
			ErrCode     int         `json:"errcode"`
			ErrMsg      string      `json:"errmsg"`
		}
		if err := roundTripJSON(s.RT, req, &ans, s.Redact); err != nil {
			return nil, err
		}
		if ans.ErrCode != 0 {
			return nil, &APIError{Code: ans.ErrCode, Endpoint: "token", Msg: s.Redact(ExplainTokenErr(s.api(), ans.ErrCode, ans.ErrMsg))}
		}
		if ans.AccessToken == "" {
			return nil, fmt.Errorf("token endpoint %s answered no access_token", base.Host)
		}
		n, _ := ans.ExpiresIn.Int64()
		return NewToken(ans.AccessToken, n, start, "fetch"), nil
	})
}

// Probe checks t with GET /cgi-bin/get_api_domain_ip, which costs no
// quota that matters and answers a token errcode only for a bad token.
// An answer with another errcode is no verdict (see probeAnswer).
func (s *AccessTokenSource) Probe(ctx context.Context, t *Token) (bool, error) {
	redact := func(m string) string { return redactToken(s.Redact(m), t) }
	var valid bool
	_, err := eachBase(ctx, s.Bases, func(base *url.URL) (*Token, error) {
		u := *base
		u.Path = "/cgi-bin/get_api_domain_ip"
		u.RawQuery = "access_token=" + t.escaped
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, errors.New("building the probe failed")
		}
		v, err := probeAnswer(s.RT, req, redact)
		valid = v
		return nil, err
	})
	return valid, err
}

// probeAnswer sends a probe and reads its verdict: errcode 0 is valid, a
// token errcode invalid, and any other errcode (-1 busy, 45009 quota,
// 48001 …) no verdict at all: an *APIError, so the Cache keeps the token.
func probeAnswer(rt http.RoundTripper, req *http.Request, redact func(string) string) (bool, error) {
	var ans struct {
		ErrCode int    `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}
	if err := roundTripJSON(rt, req, &ans, redact); err != nil {
		return false, err
	}
	switch {
	case ans.ErrCode == 0:
		return true, nil
	case IsTokenErrcode(ans.ErrCode):
		return false, nil
	}
	return false, &APIError{Code: ans.ErrCode, Endpoint: "probe " + req.URL.Path, Msg: redact(ans.ErrMsg)}
}

// request builds the token request. Stable takes the secret in a JSON
// body; classic and WeCom need it in the URL.
func (s *AccessTokenSource) request(ctx context.Context, base *url.URL, force bool) (*http.Request, error) {
	u := *base
	switch s.api() {
	case APIWork:
		u.Path = "/cgi-bin/gettoken"
		u.RawQuery = url.Values{"corpid": {s.AppID}, "corpsecret": {s.Secret}}.Encode()
		return http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	case APIClassic:
		u.Path = "/cgi-bin/token"
		u.RawQuery = url.Values{"grant_type": {"client_credential"}, "appid": {s.AppID}, "secret": {s.Secret}}.Encode()
		return http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	}
	u.Path = "/cgi-bin/stable_token"
	body, err := json.Marshal(struct {
		GrantType    string `json:"grant_type"`
		AppID        string `json:"appid"`
		Secret       string `json:"secret"`
		ForceRefresh bool   `json:"force_refresh"`
	}{"client_credential", s.AppID, s.Secret, force})
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

// Redact removes the secret, raw and query-escaped, from s.
func (s *AccessTokenSource) Redact(m string) string {
	if s.Secret == "" {
		return m
	}
	m = strings.ReplaceAll(m, s.Secret, "[secret]")
	return strings.ReplaceAll(m, url.QueryEscape(s.Secret), "[secret]")
}

func redactToken(m string, t *Token) string {
	if t == nil || t.Value == "" {
		return m
	}
	m = strings.ReplaceAll(m, t.Value, "[token]")
	return strings.ReplaceAll(m, t.escaped, "[token]")
}

// eachBase calls try on each base until one answers: an APIError or a
// cancelled ctx ends the loop, other errors move on.
func eachBase(ctx context.Context, bases []*url.URL, try func(*url.URL) (*Token, error)) (*Token, error) {
	if len(bases) == 0 {
		return nil, errors.New("no token endpoint configured")
	}
	var errs []error
	for _, b := range bases {
		t, err := try(b)
		if err == nil {
			return t, nil
		}
		var ae *APIError
		if errors.As(err, &ae) || ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// roundTripJSON sends req and decodes a small JSON answer into v. Errors
// are rebuilt through redact: they never quote the URL.
func roundTripJSON(rt http.RoundTripper, req *http.Request, v any, redact func(string) string) error {
	if rt == nil {
		rt = http.DefaultTransport
	}
	host := req.URL.Host
	resp, err := rt.RoundTrip(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return fmt.Errorf("%s: %w", host, req.Context().Err())
		}
		return fmt.Errorf("%s: %s", host, redact(err.Error()))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return fmt.Errorf("%s: reading answer: %s", host, redact(err.Error()))
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered HTTP %d", host, resp.StatusCode)
	}
	if len(body) > maxBody {
		return fmt.Errorf("%s answered more than %d bytes", host, maxBody)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s answered something that is not JSON (%s, %d bytes)", host, resp.Header.Get("Content-Type"), len(body))
	}
	return nil
}

// ExplainTokenErr turns a token endpoint's errcode into a message that
// says what to fix. From WeCom's gettoken, 40001 is a wrong corpsecret,
// not a bad token: a configuration error that backoff paces.
func ExplainTokenErr(api string, code int, msg string) string {
	var hint string
	if api == APIWork {
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

// TicketSource fetches a JS-SDK ticket (jsapi or wx_card) with a token
// from Tokens. A token errcode from getticket goes through
// Tokens.Rejected, so it costs what any request's evidence costs, and the
// fetch is retried once with a fresher token.
type TicketSource struct {
	Tokens *Cache
	RT     http.RoundTripper
	Bases  []*url.URL
	Type   string              // "jsapi" or "wx_card"
	Redact func(string) string // removes the account's secret; may be nil
	Now    func() time.Time
}

func (s *TicketSource) Fetch(ctx context.Context, _ FetchOptions) (*Token, error) {
	tok, err := s.Tokens.Token(ctx)
	if err != nil {
		return nil, err
	}
	t, err := s.getticket(ctx, tok)
	var ae *APIError
	if !errors.As(err, &ae) || !IsTokenErrcode(ae.Code) {
		s.Tokens.Confirm(tok)
		return t, err
	}
	fresh, replay, rerr := s.Tokens.RejectedOn(ctx, tok, "/cgi-bin/ticket/getticket")
	if rerr != nil || !replay {
		return nil, err
	}
	t, err = s.getticket(ctx, fresh)
	if !errors.As(err, &ae) || !IsTokenErrcode(ae.Code) {
		s.Tokens.Confirm(fresh)
	}
	return t, err
}

func (s *TicketSource) getticket(ctx context.Context, tok *Token) (*Token, error) {
	redact := func(m string) string {
		if s.Redact != nil {
			m = s.Redact(m)
		}
		return redactToken(m, tok)
	}
	return eachBase(ctx, s.Bases, func(base *url.URL) (*Token, error) {
		u := *base
		u.Path = "/cgi-bin/ticket/getticket"
		u.RawQuery = "access_token=" + tok.escaped + "&type=" + url.QueryEscape(s.Type)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, errors.New("building the getticket request failed")
		}
		start := time.Now()
		if s.Now != nil {
			start = s.Now()
		}
		var ans struct {
			ErrCode   int         `json:"errcode"`
			ErrMsg    string      `json:"errmsg"`
			Ticket    string      `json:"ticket"`
			ExpiresIn json.Number `json:"expires_in"`
		}
		if err := roundTripJSON(s.RT, req, &ans, redact); err != nil {
			return nil, fmt.Errorf("getticket %w", err)
		}
		if ans.ErrCode != 0 {
			return nil, &APIError{Code: ans.ErrCode, Endpoint: "getticket", Msg: redact(ans.ErrMsg)}
		}
		if ans.Ticket == "" {
			return nil, fmt.Errorf("getticket %s answered no ticket", base.Host)
		}
		n, _ := ans.ExpiresIn.Int64()
		return NewToken(ans.Ticket, n, start, "fetch"), nil
	})
}
