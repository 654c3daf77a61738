package credential

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Open platform (第三方平台) credentials: the component_access_token, which
// needs the component_verify_ticket WeChat pushes every 10 minutes, and
// one authorizer_access_token per merchant, renewed with that merchant's
// authorizer_refresh_token. Both are Sources for an ordinary Cache.

// Auxiliary value names.
const (
	AuxVerifyTicket = "component_verify_ticket"
	AuxRefreshToken = "authorizer_refresh_token"
)

// Renewal windows of the open platform. The component token renews like a
// classic token; authorizer tokens 2–8 min early (a mean of 5, so ten
// thousand authorizers renew about 10,000 / 115 min), their phases spread
// by Config.Spread.
var (
	ComponentWindow  = ClassicWindow
	AuthorizerWindow = Window{2 * time.Minute, 8 * time.Minute}
)

// Errors of the open platform. An AuthorizerError wraps the last two.
var (
	// ErrNoTicket: no component_verify_ticket was ever pushed (or stored).
	ErrNoTicket = errors.New("no component_verify_ticket stored yet: WeChat pushes one every 10 minutes to the platform's 授权事件接收URL, which must reach the wechat_component_callback handler")
	// ErrUnknownAuthorizer: no refresh token is stored for the appid.
	ErrUnknownAuthorizer = errors.New("unknown authorizer: no authorizer_refresh_token is stored for it (the merchant has not authorized this platform, or the authorized event was missed)")
	// ErrAuthorizerRevoked: WeChat answered 61003 or an unauthorized event
	// came in; the authorizer is forgotten.
	ErrAuthorizerRevoked = errors.New("the authorizer has revoked this platform's authorization (61003): it must authorize again")
)

// AuthorizerError names the authorizer an error is about. The appid is
// public; no token is ever in it.
type AuthorizerError struct {
	AppID string
	Err   error
}

func (e *AuthorizerError) Error() string { return "authorizer " + e.AppID + ": " + e.Err.Error() }
func (e *AuthorizerError) Unwrap() error { return e.Err }

// ExplainComponentErr turns an open-platform errcode into what to fix.
func ExplainComponentErr(code int, msg string) string {
	var hint string
	switch code {
	case 61005:
		hint = "component_verify_ticket expired: no push reached the callback for about 12 hours"
	case 61006:
		hint = "component_verify_ticket invalid: the stored ticket is not the latest WeChat pushed, or belongs to another platform"
	case 61004:
		hint = "this server's IP is not in the platform's IP whitelist (开发资料 → 授权IP白名单)"
	case 61023:
		hint = "authorizer_refresh_token invalid: it was rotated or revoked"
	case 61003:
		hint = "the authorizer has not authorized this platform (or revoked it)"
	case 40013:
		hint = "bad component appid"
	case 40125, 40001:
		hint = "bad component appsecret"
	}
	if hint == "" {
		return msg
	}
	return fmt.Sprintf("%s (%s)", hint, msg)
}

// ComponentTokenSource fetches the component_access_token with the latest
// ticket in its Aux. Errors are redacted of the secret and the ticket.
type ComponentTokenSource struct {
	RT     http.RoundTripper
	Bases  []*url.URL
	AppID  string
	Secret string
	Now    func() time.Time
}

func (s *ComponentTokenSource) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Redact removes the secret, raw and escaped, from m.
func (s *ComponentTokenSource) Redact(m string) string {
	return redactAll(m, "[secret]", s.Secret)
}

func (s *ComponentTokenSource) Fetch(ctx context.Context, opt FetchOptions) (*Token, error) {
	if opt.Aux == nil {
		return nil, ErrNoTicket
	}
	tk, err := opt.Aux.Get(ctx, AuxVerifyTicket)
	if errors.Is(err, ErrNotFound) || (err == nil && len(tk) == 0) {
		return nil, ErrNoTicket
	}
	if err != nil {
		return nil, fmt.Errorf("reading the component_verify_ticket: %w", err)
	}
	ticket := string(tk)
	redact := func(m string) string { return redactAll(s.Redact(m), "[ticket]", ticket) }
	body, _ := json.Marshal(struct {
		AppID  string `json:"component_appid"`
		Secret string `json:"component_appsecret"`
		Ticket string `json:"component_verify_ticket"`
	}{s.AppID, s.Secret, ticket})
	return eachBase(ctx, s.Bases, func(base *url.URL) (*Token, error) {
		start := s.now()
		var ans struct {
			Token     string      `json:"component_access_token"`
			ExpiresIn json.Number `json:"expires_in"`
			ErrCode   int         `json:"errcode"`
			ErrMsg    string      `json:"errmsg"`
		}
		if err := postJSON(ctx, s.RT, base, "/cgi-bin/component/api_component_token", "", body, &ans, redact); err != nil {
			return nil, err
		}
		if ans.ErrCode != 0 {
			return nil, &APIError{Code: ans.ErrCode, Endpoint: "api_component_token", Msg: redact(ExplainComponentErr(ans.ErrCode, ans.ErrMsg))}
		}
		if ans.Token == "" {
			return nil, fmt.Errorf("api_component_token on %s answered no component_access_token", base.Host)
		}
		n, _ := ans.ExpiresIn.Int64()
		return NewToken(ans.Token, n, start, "fetch"), nil
	})
}

// Probe checks the component token with api_get_authorizer_list (offset
// 0, count 1): documented to take the component_access_token and to
// answer 40001 for a bad one, a read that changes nothing, and the
// cheapest call the component token alone can make (get_api_domain_ip is
// documented for access tokens only). Its answer names one authorizer and
// its refresh token; only the errcode is read. Without it, a caller's
// component API that answers 40001 whatever the token would throw the
// component token away each time, with no ceiling (issue 19).
func (s *ComponentTokenSource) Probe(ctx context.Context, t *Token) (bool, error) {
	redact := func(m string) string { return redactToken(s.Redact(m), t) }
	body, _ := json.Marshal(struct {
		AppID  string `json:"component_appid"`
		Offset int    `json:"offset"`
		Count  int    `json:"count"`
	}{s.AppID, 0, 1})
	var valid bool
	_, err := eachBase(ctx, s.Bases, func(base *url.URL) (*Token, error) {
		u := *base
		u.Path = "/cgi-bin/component/api_get_authorizer_list"
		u.RawQuery = "component_access_token=" + t.escaped
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
		if err != nil {
			return nil, errors.New("building the component token probe failed")
		}
		req.Header.Set("Content-Type", "application/json")
		v, err := probeAnswer(s.RT, req, redact)
		valid = v
		return nil, err
	})
	return valid, err
}

// Platform is what every authorizer of one component shares: the
// component token cache, the transport and the hooks. One per component,
// so an authorizer costs only its appid and its Cache.
type Platform struct {
	Component *Cache
	RT        http.RoundTripper
	Bases     []*url.URL
	AppID     string // component appid
	Secret    string // component secret, only to redact it
	Now       func() time.Time
	Logger    *zap.Logger
	Events    PlatformObserver
}

// PlatformObserver counts open-platform events for metrics; bounded, so
// it never gets an authorizer appid. Methods must be cheap.
type PlatformObserver interface {
	Renewed(err error)       // one api_authorizer_token call
	Rotated()                // a new refresh token was stored
	Recovered(ok bool)       // a 61023 recovery through api_get_authorizer_info
	Forgotten(reason string) // "revoked" (61003), "unauthorized" (event)
}

type nopPlatformObserver struct{}

func (nopPlatformObserver) Renewed(error)    {}
func (nopPlatformObserver) Rotated()         {}
func (nopPlatformObserver) Recovered(bool)   {}
func (nopPlatformObserver) Forgotten(string) {}

func (p *Platform) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Platform) logger() *zap.Logger {
	if p.Logger == nil {
		return zap.NewNop()
	}
	return p.Logger
}

func (p *Platform) events() PlatformObserver {
	if p.Events == nil {
		return nopPlatformObserver{}
	}
	return p.Events
}

// AuthorizerTokenSource fetches one authorizer's access token with its
// stored refresh token. A rotated refresh token is written to the Aux
// before the access token is returned: if the store refuses it, the
// token is still returned (the merchant's calls go on) and the new
// refresh token is kept in memory; the next fetch writes it first, and
// fails clearly rather than use it while it is not durable.
type AuthorizerTokenSource struct {
	P     *Platform
	AppID string

	unsaved atomic.Pointer[string] // a rotated refresh token the store refused
}

// Probe checks an authorizer token with GET /cgi-bin/get_api_domain_ip,
// as for an account's access_token: an authorizer token is used exactly
// like one (open-platform-rules.md). So a merchant's API that answers
// 40001 whatever the token no longer throws the authorizer token away
// (each fetch rotating the refresh token, until the ceiling locks the
// merchant out for the day).
func (s *AuthorizerTokenSource) Probe(ctx context.Context, t *Token) (bool, error) {
	p := s.P
	redact := func(m string) string { return redactToken(redactAll(m, "[secret]", p.Secret), t) }
	var valid bool
	_, err := eachBase(ctx, p.Bases, func(base *url.URL) (*Token, error) {
		u := *base
		u.Path = "/cgi-bin/get_api_domain_ip"
		u.RawQuery = "access_token=" + t.escaped
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, errors.New("building the authorizer token probe failed")
		}
		v, err := probeAnswer(p.RT, req, redact)
		valid = v
		return nil, err
	})
	return valid, err
}

// unusable marks a forgotten authorizer in the Aux, which has no delete:
// an empty refresh token.
func unusable(v []byte) bool { return len(v) == 0 }

func (s *AuthorizerTokenSource) refreshToken(ctx context.Context, aux Aux) (string, error) {
	if u := s.unsaved.Load(); u != nil {
		// Never use a rotated refresh token before it is durable: its use
		// rotates it again, and a crash would then lose the only live one.
		if err := aux.Put(ctx, AuxRefreshToken, []byte(*u)); err != nil {
			return "", fmt.Errorf("the rotated refresh token of authorizer %s is not stored yet (%w); not using it until it is", s.AppID, err)
		}
		s.unsaved.CompareAndSwap(u, nil)
		return *u, nil
	}
	v, err := aux.Get(ctx, AuxRefreshToken)
	if errors.Is(err, ErrNotFound) || (err == nil && unusable(v)) {
		return "", &AuthorizerError{s.AppID, ErrUnknownAuthorizer}
	}
	if err != nil {
		return "", fmt.Errorf("reading the refresh token of authorizer %s: %w", s.AppID, err)
	}
	return string(v), nil
}

func (s *AuthorizerTokenSource) Fetch(ctx context.Context, opt FetchOptions) (*Token, error) {
	if opt.Aux == nil {
		return nil, &AuthorizerError{s.AppID, ErrUnknownAuthorizer}
	}
	rt, err := s.refreshToken(ctx, opt.Aux)
	if err != nil {
		return nil, err
	}
	p := s.P
	ctok, err := p.Component.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("no component_access_token: %w", err)
	}
	t, next, err := s.call(ctx, ctok, rt)
	var ae *APIError
	if errors.As(err, &ae) && IsTokenErrcode(ae.Code) {
		// About the component token, not the authorizer's.
		fresh, replay, rerr := p.Component.RejectedOn(ctx, ctok, "/cgi-bin/component/api_authorizer_token")
		if rerr == nil && replay {
			ctok = fresh
			t, next, err = s.call(ctx, ctok, rt)
		}
	}
	if !errors.As(err, &ae) || !IsTokenErrcode(ae.Code) {
		p.Component.Confirm(ctok) // it answered: fresh evidence that it works
	}
	if errors.As(err, &ae) && ae.Code == 61023 {
		var rec string
		rec, err = s.recover(ctx, opt.Aux, ctok, rt, err)
		if err == nil {
			rt = rec
			t, next, err = s.call(ctx, ctok, rt)
		}
	}
	if errors.As(err, &ae) && ae.Code == 61003 {
		_ = opt.Aux.Put(ctx, AuxRefreshToken, nil)
		p.events().Forgotten("revoked")
		p.logger().Warn("authorizer revoked the platform (61003); forgetting it", Event(EventAuthorizerRevoked), zap.String(FieldAuthorizer, s.AppID), zap.Int(FieldErrcode, 61003))
		return nil, &AuthorizerError{s.AppID, ErrAuthorizerRevoked}
	}
	p.events().Renewed(err)
	if err != nil {
		return nil, err
	}
	if next != "" && next != rt {
		s.rotate(ctx, opt.Aux, next)
	}
	return t, nil
}

// rotate stores a new refresh token before its access token is used.
func (s *AuthorizerTokenSource) rotate(ctx context.Context, aux Aux, next string) {
	var err error
	for range 3 {
		if err = aux.Put(ctx, AuxRefreshToken, []byte(next)); err == nil {
			s.unsaved.Store(nil)
			s.P.events().Rotated()
			return
		}
	}
	s.unsaved.Store(&next)
	s.P.logger().Error("the store refused a rotated authorizer_refresh_token; keeping it in memory and writing it again on the next renewal", Event(EventRefreshTokenUnsaved),
		zap.String(FieldAuthorizer, s.AppID), zap.String(FieldError, err.Error()))
}

// recover asks api_get_authorizer_info for the refresh token after a
// 61023. It returns the recovered token (stored), or the original error.
func (s *AuthorizerTokenSource) recover(ctx context.Context, aux Aux, ctok *Token, old string, orig error) (string, error) {
	p := s.P
	rt, err := p.AuthorizerInfoRefreshToken(ctx, ctok, s.AppID)
	if err != nil || rt == "" || rt == old {
		p.events().Recovered(false)
		p.logger().Error("authorizer_refresh_token invalid (61023) and api_get_authorizer_info gave no other; the merchant must authorize again", Event(EventRefreshTokenLost),
			zap.String(FieldAuthorizer, s.AppID), zap.Int(FieldErrcode, 61023))
		return "", orig
	}
	if err := aux.Put(ctx, AuxRefreshToken, []byte(rt)); err != nil {
		s.unsaved.Store(&rt)
	}
	p.events().Recovered(true)
	p.logger().Warn("authorizer_refresh_token recovered through api_get_authorizer_info after 61023", Event(EventRefreshTokenRecovered), zap.String(FieldAuthorizer, s.AppID), zap.Int(FieldErrcode, 61023))
	return rt, nil
}

func (s *AuthorizerTokenSource) call(ctx context.Context, ctok *Token, rt string) (*Token, string, error) {
	p := s.P
	redact := func(m string) string {
		return redactAll(redactToken(redactAll(m, "[secret]", p.Secret), ctok), "[refresh_token]", rt)
	}
	body, _ := json.Marshal(struct {
		Component  string `json:"component_appid"`
		Authorizer string `json:"authorizer_appid"`
		Refresh    string `json:"authorizer_refresh_token"`
	}{p.AppID, s.AppID, rt})
	var next string
	t, err := eachBase(ctx, p.Bases, func(base *url.URL) (*Token, error) {
		start := p.now()
		var ans struct {
			Token     string      `json:"authorizer_access_token"`
			ExpiresIn json.Number `json:"expires_in"`
			Refresh   string      `json:"authorizer_refresh_token"`
			ErrCode   int         `json:"errcode"`
			ErrMsg    string      `json:"errmsg"`
		}
		if err := postJSON(ctx, p.RT, base, "/cgi-bin/component/api_authorizer_token", ctok.Escaped(), body, &ans, redact); err != nil {
			return nil, err
		}
		if ans.ErrCode != 0 {
			return nil, &APIError{Code: ans.ErrCode, Endpoint: "api_authorizer_token", Msg: redact(ExplainComponentErr(ans.ErrCode, ans.ErrMsg))}
		}
		if ans.Token == "" {
			return nil, fmt.Errorf("api_authorizer_token on %s answered no authorizer_access_token", base.Host)
		}
		next = ans.Refresh
		n, _ := ans.ExpiresIn.Int64()
		return NewToken(ans.Token, n, start, "fetch"), nil
	})
	return t, next, err
}

// AuthorizerInfoRefreshToken asks api_get_authorizer_info for an
// authorizer's current refresh token ("" when WeChat does not give it).
func (p *Platform) AuthorizerInfoRefreshToken(ctx context.Context, ctok *Token, authorizer string) (string, error) {
	body, _ := json.Marshal(struct {
		Component  string `json:"component_appid"`
		Authorizer string `json:"authorizer_appid"`
	}{p.AppID, authorizer})
	var rt string
	_, err := eachBase(ctx, p.Bases, func(base *url.URL) (*Token, error) {
		var ans struct {
			Info struct {
				Refresh string `json:"authorizer_refresh_token"`
			} `json:"authorization_info"`
			ErrCode int    `json:"errcode"`
			ErrMsg  string `json:"errmsg"`
		}
		redact := func(m string) string { return redactToken(m, ctok) }
		if err := postJSON(ctx, p.RT, base, "/cgi-bin/component/api_get_authorizer_info", ctok.Escaped(), body, &ans, redact); err != nil {
			return nil, err
		}
		if ans.ErrCode != 0 {
			return nil, &APIError{Code: ans.ErrCode, Endpoint: "api_get_authorizer_info", Msg: redact(ExplainComponentErr(ans.ErrCode, ans.ErrMsg))}
		}
		rt = ans.Info.Refresh
		return nil, nil
	})
	return rt, err
}

// Authorization is what api_query_auth gives for an auth code.
type Authorization struct {
	AuthorizerAppID string
	RefreshToken    string // never logged
	Token           *Token // the first authorizer_access_token; may be nil
}

// QueryAuth exchanges an authorization code (from the authorized event or
// the redirect) with api_query_auth. A token errcode about the component
// token is replayed once through Component.Rejected.
func (p *Platform) QueryAuth(ctx context.Context, code string) (*Authorization, error) {
	ctok, err := p.Component.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("no component_access_token: %w", err)
	}
	a, err := p.queryAuth(ctx, ctok, code)
	var ae *APIError
	if errors.As(err, &ae) && IsTokenErrcode(ae.Code) {
		if fresh, replay, rerr := p.Component.RejectedOn(ctx, ctok, "/cgi-bin/component/api_query_auth"); rerr == nil && replay {
			a, err = p.queryAuth(ctx, fresh, code)
			ctok = fresh
		}
	}
	if !errors.As(err, &ae) || !IsTokenErrcode(ae.Code) {
		p.Component.Confirm(ctok)
	}
	return a, err
}

func (p *Platform) queryAuth(ctx context.Context, ctok *Token, code string) (*Authorization, error) {
	body, _ := json.Marshal(struct {
		Component string `json:"component_appid"`
		Code      string `json:"authorization_code"`
	}{p.AppID, code})
	var out *Authorization
	_, err := eachBase(ctx, p.Bases, func(base *url.URL) (*Token, error) {
		start := p.now()
		var ans struct {
			Info struct {
				AppID     string      `json:"authorizer_appid"`
				Token     string      `json:"authorizer_access_token"`
				ExpiresIn json.Number `json:"expires_in"`
				Refresh   string      `json:"authorizer_refresh_token"`
			} `json:"authorization_info"`
			ErrCode int    `json:"errcode"`
			ErrMsg  string `json:"errmsg"`
		}
		redact := func(m string) string { return redactAll(redactToken(m, ctok), "[code]", code) }
		if err := postJSON(ctx, p.RT, base, "/cgi-bin/component/api_query_auth", ctok.Escaped(), body, &ans, redact); err != nil {
			return nil, err
		}
		if ans.ErrCode != 0 {
			return nil, &APIError{Code: ans.ErrCode, Endpoint: "api_query_auth", Msg: redact(ExplainComponentErr(ans.ErrCode, ans.ErrMsg))}
		}
		if ans.Info.AppID == "" || ans.Info.Refresh == "" {
			return nil, errors.New("api_query_auth answered no authorizer_appid or authorizer_refresh_token")
		}
		out = &Authorization{AuthorizerAppID: ans.Info.AppID, RefreshToken: ans.Info.Refresh}
		if ans.Info.Token != "" {
			n, _ := ans.Info.ExpiresIn.Int64()
			out.Token = NewToken(ans.Info.Token, n, start, "fetch")
		}
		return nil, nil
	})
	return out, err
}

// postJSON POSTs body to base+path, with the component token in the
// query when ctok is set, and decodes the answer into v.
func postJSON(ctx context.Context, rt http.RoundTripper, base *url.URL, path, ctok string, body []byte, v any, redact func(string) string) error {
	u := *base
	u.Path = path
	u.RawQuery = ""
	if ctok != "" {
		u.RawQuery = "component_access_token=" + ctok
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return errors.New("building the " + path + " request failed")
	}
	req.Header.Set("Content-Type", "application/json")
	return roundTripJSON(rt, req, v, redact)
}

// redactAll replaces secret, raw and query-escaped, by mark.
func redactAll(m, mark, secret string) string {
	if secret == "" {
		return m
	}
	m = strings.ReplaceAll(m, secret, mark)
	return strings.ReplaceAll(m, url.QueryEscape(secret), mark)
}
