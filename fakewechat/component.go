package fakewechat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/caddy-wechat/wechat/internal/wxcrypto"
)

// ComponentOptions make the fake an open platform (第三方平台) following
// docs/open-platform-rules.md. Zero durations take WeChat's values.
type ComponentOptions struct {
	// AppID and Secret are the component's credentials; AppID "" turns
	// the open platform off.
	AppID, Secret string
	// Token and EncodingAESKey are the callback's message crypto settings.
	Token, EncodingAESKey string
	// TicketTTL is how long a pushed component_verify_ticket works (12h).
	TicketTTL time.Duration
	// LatestTicketOnly makes a superseded ticket answer 61006 at once, to
	// prove a platform uses the newest one; by default a ticket works for
	// its whole TicketTTL.
	LatestTicketOnly bool
	// AuthCodeTTL is the life of an authorization_code (10m).
	AuthCodeTTL time.Duration
	// RotateEvery makes every Nth api_authorizer_token call of an
	// authorizer return a new refresh token (0: never rotate).
	RotateEvery int
	// RotateGrace is how long the replaced refresh token still works
	// (default 1m); after it, 61023.
	RotateGrace time.Duration
}

// openPlatform is the component's state, under Server.mu. Authorizers sit
// in one map: 10,000 of them cost a map entry each and no goroutine.
type openPlatform struct {
	o       *ComponentOptions
	crypter *wxcrypto.Crypter // nil when EncodingAESKey is unset

	tickets  map[string]time.Time // pushed ticket -> push time
	latest   string
	tokenCur string                 // newest component_access_token
	preAuth  map[string]time.Time   // pre_auth_code -> expiry
	codes    map[string]*authCode   // authorization_code -> its grant
	auths    map[string]*authorizer // authorizer appid -> state
	seq      int                    // AddAuthorizers numbering
}

type authCode struct {
	appid   string
	expires time.Time
}

// authorizer is one merchant account that authorized the component.
type authorizer struct {
	revoked     bool
	refresh     string    // current authorizer_refresh_token
	prevRefresh string    // the one it replaced, valid until prevUntil
	prevUntil   time.Time //
	tokenCur    string    // newest authorizer_access_token
	calls       int       // api_authorizer_token calls, for rotation
}

func newOpenPlatform(o *ComponentOptions) *openPlatform {
	if o.AppID == "" {
		return nil
	}
	if o.TicketTTL <= 0 {
		o.TicketTTL = 12 * time.Hour
	}
	if o.AuthCodeTTL <= 0 {
		o.AuthCodeTTL = 10 * time.Minute
	}
	if o.RotateGrace <= 0 {
		o.RotateGrace = time.Minute
	}
	op := &openPlatform{
		o:       o,
		tickets: make(map[string]time.Time),
		preAuth: make(map[string]time.Time),
		codes:   make(map[string]*authCode),
		auths:   make(map[string]*authorizer),
	}
	if o.EncodingAESKey != "" {
		// A bad key is a test's own mistake: fail loudly at push time.
		op.crypter, _ = wxcrypto.New(o.Token, o.EncodingAESKey, o.AppID)
	}
	return op
}

// funcInfo is the permission set list every fake authorizer grants.
var funcInfo = []map[string]map[string]int{
	{"funcscope_category": {"id": 1}},
	{"funcscope_category": {"id": 15}},
}

// componentReq is the union of the component endpoints' JSON bodies.
type componentReq struct {
	ComponentAppID    string `json:"component_appid"`
	ComponentSecret   string `json:"component_appsecret"`
	Ticket            string `json:"component_verify_ticket"`
	AuthorizationCode string `json:"authorization_code"`
	AuthorizerAppID   string `json:"authorizer_appid"`
	AuthorizerRefresh string `json:"authorizer_refresh_token"`
}

// componentAPI serves /cgi-bin/component/*. Every call is counted under
// its last path segment, e.g. Fetches("api_authorizer_token"), rejected
// ones included.
func (s *Server) componentAPI(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	var req componentReq
	bad := r.Method != http.MethodPost || json.Unmarshal(body, &req) != nil
	switch name {
	case "api_component_token", "api_authorizer_token":
		// Token endpoints: failure injection applies, as on the others.
		s.tokenEndpoint(w, r, name, func(w http.ResponseWriter, r *http.Request) {
			if bad {
				writeErr(w, 47001, "")
				return
			}
			if name == "api_component_token" {
				s.componentToken(w, req)
				return
			}
			if s.componentCheck(w, r, req) {
				s.authorizerToken(w, req)
			}
		})
		return
	}
	s.count(name)
	if r.URL.Path == ComponentAlwaysInvalidPath {
		writeErr(w, 40001, "") // whatever the component token
		return
	}
	if !s.componentCheck(w, r, req) {
		return
	}
	if bad {
		writeErr(w, 47001, "")
		return
	}
	switch name {
	case "api_create_preauthcode":
		s.preAuthCode(w)
	case "api_query_auth":
		s.queryAuth(w, req)
	case "api_get_authorizer_info":
		s.authorizerInfo(w, req)
	default:
		s.echoComponent(w, r)
	}
}

// ComponentAlwaysInvalidPath answers 40001 whatever the component token,
// like a component API that checks a credential of the caller's own: a
// fresh component token cannot fix it. Calls count in
// Fetches("test_always_40001").
const ComponentAlwaysInvalidPath = "/cgi-bin/component/test_always_40001"

// componentCheck checks component_access_token (41018 missing; 40001 not
// a component token; 42001 expired) and the component_appid in the body.
func (s *Server) componentCheck(w http.ResponseWriter, r *http.Request, req componentReq) bool {
	q, _ := url.ParseQuery(r.URL.RawQuery)
	vals := q["component_access_token"]
	s.mu.Lock()
	code := 41018
	switch {
	case len(vals) > 1:
		code = 40001
	case len(vals) == 1 && vals[0] != "":
		var tk *token
		code, tk = s.check(vals[0], s.opts.Now())
		if code == 0 && tk.kind != kindComponent {
			code = 40001
		}
	}
	if code != 0 {
		s.obs.rejected[code]++
	}
	s.mu.Unlock()
	if code == 0 && req.ComponentAppID != "" && req.ComponentAppID != s.open.o.AppID {
		code = 40013
	}
	if code != 0 {
		writeErr(w, code, "")
		return false
	}
	return true
}

// componentToken serves api_component_token: 61006 for a ticket WeChat
// never pushed, 61005 for one past its TicketTTL. Every call issues a new
// token; the previous one keeps working for Overlap, as classic tokens.
func (s *Server) componentToken(w http.ResponseWriter, req componentReq) {
	op := s.open
	if req.ComponentAppID != op.o.AppID {
		writeErr(w, 40013, "")
		return
	}
	if req.ComponentSecret == "" || req.ComponentSecret != op.o.Secret {
		writeErr(w, 40125, "")
		return
	}
	s.mu.Lock()
	now := s.opts.Now()
	pushed, ok := op.tickets[req.Ticket]
	code := 0
	switch {
	case req.Ticket == "" || !ok:
		code = 61006
	case op.o.LatestTicketOnly && req.Ticket != op.latest:
		code = 61006
	case now.Sub(pushed) >= op.o.TicketTTL:
		code = 61005
	}
	if code != 0 {
		s.mu.Unlock()
		writeErr(w, code, "")
		return
	}
	if old := s.tokens[op.tokenCur]; old != nil && old.cutoff.IsZero() {
		old.cutoff = now.Add(s.opts.Overlap)
	}
	t := s.newToken(kindComponent, "component:"+op.o.AppID, now)
	op.tokenCur = t
	s.mu.Unlock()
	writeJSON(w, map[string]any{"component_access_token": t, "expires_in": int(s.tokenTTL() / time.Second)})
}

func (s *Server) preAuthCode(w http.ResponseWriter) {
	code := "preauthcode@@@" + randString(36)
	s.mu.Lock()
	s.open.preAuth[code] = s.opts.Now().Add(1800 * time.Second)
	s.mu.Unlock()
	writeJSON(w, map[string]any{"pre_auth_code": code, "expires_in": 1800})
}

// queryAuth serves api_query_auth: an authorization_code works once and
// for AuthCodeTTL (61009 unknown or used, 61010 expired).
func (s *Server) queryAuth(w http.ResponseWriter, req componentReq) {
	op := s.open
	s.mu.Lock()
	now := s.opts.Now()
	c := op.codes[req.AuthorizationCode]
	delete(op.codes, req.AuthorizationCode)
	a := (*authorizer)(nil)
	code := 0
	switch {
	case c == nil:
		code = 61009
	case !now.Before(c.expires):
		code = 61010
	default:
		a = op.auths[c.appid]
		if a == nil || a.revoked {
			code = 61003
		}
	}
	if code != 0 {
		s.mu.Unlock()
		writeErr(w, code, "")
		return
	}
	t := s.issueAuthorizerToken(a, c.appid, now)
	info := map[string]any{
		"authorizer_appid":         c.appid,
		"authorizer_access_token":  t,
		"expires_in":               int(s.tokenTTL() / time.Second),
		"authorizer_refresh_token": a.refresh,
		"func_info":                funcInfo,
	}
	s.mu.Unlock()
	writeJSON(w, map[string]any{"authorization_info": info})
}

// issueAuthorizerToken issues a's new token; the previous one keeps
// working for Overlap. Callers hold s.mu.
func (s *Server) issueAuthorizerToken(a *authorizer, appid string, now time.Time) string {
	if old := s.tokens[a.tokenCur]; old != nil && old.cutoff.IsZero() {
		old.cutoff = now.Add(s.opts.Overlap)
	}
	a.tokenCur = s.newToken(kindAuthorizer, "authorizer:"+appid, now)
	return a.tokenCur
}

// authorizerToken serves api_authorizer_token: 61003 for an unknown or
// revoked authorizer, 61023 for a refresh token that is not the current
// one (or the replaced one within RotateGrace). Every RotateEvery-th call
// hands out a new refresh token.
func (s *Server) authorizerToken(w http.ResponseWriter, req componentReq) {
	op := s.open
	s.mu.Lock()
	now := s.opts.Now()
	a := op.auths[req.AuthorizerAppID]
	code := 0
	switch {
	case a == nil || a.revoked:
		code = 61003
	case req.AuthorizerRefresh == "":
		code = 61023
	case req.AuthorizerRefresh == a.refresh:
	case req.AuthorizerRefresh == a.prevRefresh && now.Before(a.prevUntil):
	default:
		code = 61023
	}
	if code != 0 {
		s.mu.Unlock()
		writeErr(w, code, "")
		return
	}
	a.calls++
	if n := op.o.RotateEvery; n > 0 && a.calls%n == 0 {
		a.prevRefresh, a.prevUntil = a.refresh, now.Add(op.o.RotateGrace)
		a.refresh = newRefresh()
	}
	t := s.issueAuthorizerToken(a, req.AuthorizerAppID, now)
	ans := map[string]any{
		"authorizer_access_token":  t,
		"expires_in":               int(s.tokenTTL() / time.Second),
		"authorizer_refresh_token": a.refresh,
	}
	s.mu.Unlock()
	writeJSON(w, ans)
}

func newRefresh() string { return "refreshtoken@@@" + randString(30) }

// authorizerInfo serves api_get_authorizer_info, whose authorization_info
// carries the current authorizer_refresh_token, as the current docs say.
func (s *Server) authorizerInfo(w http.ResponseWriter, req componentReq) {
	s.mu.Lock()
	a := s.open.auths[req.AuthorizerAppID]
	if a == nil || a.revoked {
		s.mu.Unlock()
		writeErr(w, 61003, "")
		return
	}
	rt := a.refresh
	s.mu.Unlock()
	writeJSON(w, map[string]any{
		"authorizer_info": map[string]any{
			"nick_name":         "fake " + req.AuthorizerAppID,
			"user_name":         "gh_" + strings.TrimPrefix(req.AuthorizerAppID, "wx"),
			"service_type_info": map[string]int{"id": 2},
			"verify_type_info":  map[string]int{"id": 0},
		},
		"authorization_info": map[string]any{
			"authorizer_appid":         req.AuthorizerAppID,
			"authorizer_refresh_token": rt,
			"func_info":                funcInfo,
		},
	})
}

// echoComponent answers other component APIs with what arrived.
func (s *Server) echoComponent(w http.ResponseWriter, r *http.Request) {
	q, _ := url.ParseQuery(r.URL.RawQuery)
	q.Del("component_access_token")
	writeJSON(w, map[string]any{"errcode": 0, "errmsg": "ok", "path": r.URL.Path, "query": q.Encode(),
		"caddy_wechat_fake": Proof{Token: "valid", TokenKind: "component", RID: ridOf(w)}})
}

// componentOwner names the account of a /cgi-bin/component/* request for
// rid records. Callers hold s.mu.
func (s *Server) componentOwner(r *http.Request, q url.Values, body []byte) string {
	if s.open == nil || !strings.HasPrefix(r.URL.Path, "/cgi-bin/component/") {
		return ""
	}
	if tk := s.tokens[q.Get("component_access_token")]; tk != nil {
		return tk.owner
	}
	var req componentReq
	if json.Unmarshal(body, &req) == nil && req.ComponentAppID == s.open.o.AppID {
		return "component:" + s.open.o.AppID
	}
	return ""
}

// ---- Control and test helpers ----

// op returns the open platform or panics: calling a component helper on
// a fake without Options.Component is a test's own bug.
func (s *Server) op() *openPlatform {
	if s.open == nil {
		panic("fakewechat: Options.Component.AppID is not set")
	}
	return s.open
}

// NewTicket records a fresh component_verify_ticket as if WeChat had
// pushed it, and returns it; PushTicket also delivers it.
func (s *Server) NewTicket() string {
	s.op()
	t := "ticket@@@" + randString(48)
	s.mu.Lock()
	defer s.mu.Unlock()
	op := s.open
	now := s.opts.Now()
	for old, at := range op.tickets {
		if now.Sub(at) >= op.o.TicketTTL {
			delete(op.tickets, old)
		}
	}
	op.tickets[t] = now
	op.latest = t
	return t
}

// LatestTicket returns the newest ticket ("" if none).
func (s *Server) LatestTicket() string {
	s.op()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open.latest
}

// Authorize is a merchant's admin authorizing the component: appid
// becomes (again) an authorizer, and the returned authorization_code
// works once in api_query_auth within AuthCodeTTL.
func (s *Server) Authorize(appid string) string {
	s.op()
	code := "queryauthcode@@@" + randString(36)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.authorize(appid)
	s.open.codes[code] = &authCode{appid: appid, expires: s.opts.Now().Add(s.open.o.AuthCodeTTL)}
	return code
}

// authorize creates or revives appid. Callers hold s.mu.
func (s *Server) authorize(appid string) *authorizer {
	a := s.open.auths[appid]
	if a == nil || a.revoked {
		a = &authorizer{refresh: newRefresh()}
		s.open.auths[appid] = a
	}
	return a
}

// Unauthorize is a merchant revoking the component: api_authorizer_token
// and api_get_authorizer_info answer 61003, and its tokens 40001.
func (s *Server) Unauthorize(appid string) {
	s.op()
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.open.auths[appid]
	if a == nil {
		return
	}
	a.revoked = true
	for _, tk := range s.tokens {
		if tk.owner == "authorizer:"+appid {
			tk.state = revoked
		}
	}
}

// AuthorizerCreds is what a platform stores per authorizer.
type AuthorizerCreds struct {
	AppID, RefreshToken string
}

// AddAuthorizers creates n authorized authorizers at once (appids
// wxfakeauth000001, ...), for tests and benchmarks at scale.
func (s *Server) AddAuthorizers(n int) []AuthorizerCreds {
	s.op()
	out := make([]AuthorizerCreds, 0, n)
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.open.seq++
		appid := fmt.Sprintf("wxfakeauth%06d", s.open.seq)
		a := s.authorize(appid)
		out = append(out, AuthorizerCreds{appid, a.refresh})
	}
	return out
}

// RefreshTokenOf returns appid's current refresh token ("" if none or
// revoked), to check that a gateway stored the rotated one.
func (s *Server) RefreshTokenOf(appid string) string {
	s.op()
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.open.auths[appid]; a != nil && !a.revoked {
		return a.refresh
	}
	return ""
}

// ReplaceRefreshToken gives appid a new refresh token at once, with no
// grace for the old one, as when the merchant authorizes the component
// again through another route: a gateway's stored one now answers 61023
// and api_get_authorizer_info gives the new one. It returns the new one.
func (s *Server) ReplaceRefreshToken(appid string) string {
	s.op()
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.open.auths[appid]
	if a == nil || a.revoked {
		return ""
	}
	a.refresh, a.prevRefresh, a.prevUntil = newRefresh(), "", time.Time{}
	return a.refresh
}

// CurrentAuthorizerToken returns appid's newest authorizer_access_token.
func (s *Server) CurrentAuthorizerToken(appid string) string {
	s.op()
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.open.auths[appid]; a != nil {
		return a.tokenCur
	}
	return ""
}

// Authorizers counts the authorized (not revoked) authorizers.
func (s *Server) Authorizers() int {
	s.op()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.open.auths {
		if !a.revoked {
			n++
		}
	}
	return n
}

// ---- Pushes to the platform's 授权事件接收URL ----

// pushClient delivers pushes; WeChat waits about 5 s for "success".
var pushClient = &http.Client{Timeout: 5 * time.Second}

// PushTicket pushes a new component_verify_ticket to callbackURL as
// WeChat does every 10 minutes, and returns the ticket. The ticket counts
// as issued even when the push fails, as on WeChat.
func (s *Server) PushTicket(callbackURL string) (string, error) {
	t := s.NewTicket()
	return t, s.push(callbackURL, "component_verify_ticket", "<ComponentVerifyTicket><![CDATA["+t+"]]></ComponentVerifyTicket>")
}

// PushAuthorized authorizes appid (Authorize) and pushes the authorized
// event with its AuthorizationCode, which it returns.
func (s *Server) PushAuthorized(callbackURL, appid string) (string, error) {
	return s.pushGrant(callbackURL, "authorized", appid)
}

// PushUpdateAuthorized pushes updateauthorized, with a fresh code.
func (s *Server) PushUpdateAuthorized(callbackURL, appid string) (string, error) {
	return s.pushGrant(callbackURL, "updateauthorized", appid)
}

func (s *Server) pushGrant(callbackURL, infoType, appid string) (string, error) {
	code := s.Authorize(appid)
	exp := s.opts.Now().Add(s.open.o.AuthCodeTTL).Unix()
	fields := fmt.Sprintf("<AuthorizerAppid><![CDATA[%s]]></AuthorizerAppid><AuthorizationCode><![CDATA[%s]]></AuthorizationCode><AuthorizationCodeExpiredTime>%d</AuthorizationCodeExpiredTime><PreAuthCode><![CDATA[preauthcode@@@fake]]></PreAuthCode>", appid, code, exp)
	return code, s.push(callbackURL, infoType, fields)
}

// PushUnauthorized revokes appid (Unauthorize) and pushes unauthorized.
func (s *Server) PushUnauthorized(callbackURL, appid string) error {
	s.Unauthorize(appid)
	return s.push(callbackURL, "unauthorized", "<AuthorizerAppid><![CDATA["+appid+"]]></AuthorizerAppid>")
}

// EventXML is the decrypted XML of a push, for tests of a callback.
func (s *Server) EventXML(infoType, fields string) []byte {
	s.op()
	return []byte(fmt.Sprintf("<xml><AppId><![CDATA[%s]]></AppId><CreateTime>%d</CreateTime><InfoType><![CDATA[%s]]></InfoType>%s</xml>",
		s.open.o.AppID, s.opts.Now().Unix(), infoType, fields))
}

// SealEvent encrypts an event as WeChat does and returns the query
// (timestamp, nonce, msg_signature, encrypt_type=aes) and the body.
func (s *Server) SealEvent(plainXML []byte) (url.Values, []byte, error) {
	s.op()
	c := s.open.crypter
	if c == nil {
		return nil, nil, fmt.Errorf("fakewechat: Component.EncodingAESKey is missing or not 43 characters")
	}
	ts := fmt.Sprint(s.opts.Now().Unix())
	nonce := randString(9)
	body, sig := c.Seal(plainXML, ts, nonce)
	q := url.Values{"timestamp": {ts}, "nonce": {nonce}, "msg_signature": {sig}, "encrypt_type": {"aes"}}
	return q, body, nil
}

// push encrypts and POSTs one event; anything but 200 "success" is an
// error. Pushes count in Fetches("push").
func (s *Server) push(callbackURL, infoType, fields string) error {
	s.count("push")
	q, body, err := s.SealEvent(s.EventXML(infoType, fields))
	if err != nil {
		return err
	}
	u, err := url.Parse(callbackURL)
	if err != nil {
		return err
	}
	u.RawQuery = q.Encode()
	res, err := pushClient.Post(u.String(), "text/xml", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	ans, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
	if res.StatusCode != http.StatusOK || strings.TrimSpace(string(ans)) != "success" {
		return fmt.Errorf("fakewechat: %s push answered %d %q, want \"success\"", infoType, res.StatusCode, ans)
	}
	return nil
}

// StartTicketPush pushes a ticket to callbackURL now and then every
// interval (WeChat: 10 minutes) until stop is called; failed pushes are
// dropped, as WeChat drops them. One goroutine, whatever the authorizers.
func (s *Server) StartTicketPush(callbackURL string, interval time.Duration) (stop func()) {
	s.op()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			_, _ = s.PushTicket(callbackURL)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}
