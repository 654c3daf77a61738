package fakewechat

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// tokenAnswer is the success body of all three token endpoints.
type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
}

// workAnswer is WeCom's success body, which carries errcode 0 too.
type workAnswer struct {
	ErrCode     int    `json:"errcode"`
	ErrMsg      string `json:"errmsg"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
}

// checkApp validates appid (40013) then secret (40125), WeChat's order.
func (s *Server) checkApp(appid, secret string) int {
	if appid == "" || appid != s.opts.AppID {
		return 40013
	}
	if secret == "" || secret != s.opts.Secret {
		return 40125
	}
	return 0
}

// classicToken serves GET /cgi-bin/token: every call issues a new token,
// and the previous one keeps working only for Overlap. This is what makes
// several uncoordinated fetchers knock each other out.
func (s *Server) classicToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("grant_type") != "client_credential" {
		writeErr(w, 40002, "")
		return
	}
	if code := s.checkApp(q.Get("appid"), q.Get("secret")); code != 0 {
		writeErr(w, code, "")
		return
	}
	s.mu.Lock()
	now := s.opts.Now()
	s.quota.roll(now)
	if lim := s.opts.ClassicDailyLimit; lim > 0 && s.quota.classicToday >= lim {
		s.mu.Unlock()
		writeErr(w, 45009, "")
		return
	}
	s.quota.classicToday++
	if old := s.tokens[s.classicCur]; old != nil && old.cutoff.IsZero() {
		old.cutoff = now.Add(s.opts.Overlap)
	}
	t := s.newToken(kindClassic, "app", now)
	s.classicCur = t
	ans := tokenAnswer{t, expiresIn(s.tokens[t], now)}
	s.mu.Unlock()
	writeJSON(w, ans)
}

// stableRequest is the JSON body of POST /cgi-bin/stable_token.
type stableRequest struct {
	GrantType    string `json:"grant_type"`
	AppID        string `json:"appid"`
	Secret       string `json:"secret"`
	ForceRefresh bool   `json:"force_refresh"`
}

// stableEntry reads the body before failure injection so "stable_force"
// counts forced calls even while the endpoint is made to fail.
func (s *Server) stableEntry(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var req stableRequest
	if json.Unmarshal(body, &req) == nil && req.ForceRefresh {
		s.count("stable_force")
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.tokenEndpoint(w, r, "stable", s.stableToken)
}

// stableToken serves POST /cgi-bin/stable_token: one shared token, renewed
// only in its last RenewWindow; force_refresh replaces it at once (the old
// one dies immediately) and is rate limited.
func (s *Server) stableToken(w http.ResponseWriter, r *http.Request) {
	var req stableRequest
	dec := json.NewDecoder(r.Body)
	if r.Method != http.MethodPost || dec.Decode(&req) != nil {
		writeErr(w, 47001, "")
		return
	}
	if req.GrantType != "client_credential" {
		writeErr(w, 40002, "")
		return
	}
	if code := s.checkApp(req.AppID, req.Secret); code != 0 {
		writeErr(w, code, "")
		return
	}
	s.mu.Lock()
	now := s.opts.Now()
	cur := s.tokens[s.stableCur]
	if req.ForceRefresh {
		if code := s.quota.forceAllowed(now); code != 0 {
			s.mu.Unlock()
			writeErr(w, code, "")
			return
		}
		if cur != nil && cur.state == live {
			cur.state = revoked
		}
	} else if usable(cur, now) && cur.expires.Sub(now) > s.opts.RenewWindow {
		ans := tokenAnswer{s.stableCur, expiresIn(cur, now)}
		s.mu.Unlock()
		writeJSON(w, ans)
		return
	}
	// Normal renewal leaves the old token valid until its own expiry.
	t := s.newToken(kindStable, "app", now)
	s.stableCur = t
	ans := tokenAnswer{t, expiresIn(s.tokens[t], now)}
	s.mu.Unlock()
	writeJSON(w, ans)
}

// workToken serves WeCom's GET /cgi-bin/gettoken: one token per corpsecret,
// the same one returned while it is valid, like real WeCom.
func (s *Server) workToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("corpid") == "" || q.Get("corpid") != s.opts.CorpID {
		writeErr(w, 40013, "invalid corpid")
		return
	}
	secret, agent := q.Get("corpsecret"), ""
	for name, sec := range s.opts.CorpSecrets {
		if secret != "" && sec == secret {
			agent = name
		}
	}
	if agent == "" {
		writeErr(w, 40001, "invalid credential")
		return
	}
	s.mu.Lock()
	now := s.opts.Now()
	t := s.workCur[secret]
	if !usable(s.tokens[t], now) {
		t = s.newToken(kindWork, "work:"+agent, now)
		s.workCur[secret] = t
	}
	ans := workAnswer{0, "ok", t, expiresIn(s.tokens[t], now)}
	s.mu.Unlock()
	writeJSON(w, ans)
}

// ticketAnswer is the getticket success body.
type ticketAnswer struct {
	ErrCode   int    `json:"errcode"`
	ErrMsg    string `json:"errmsg"`
	Ticket    string `json:"ticket"`
	ExpiresIn int    `json:"expires_in"`
}

// getTicket serves /cgi-bin/ticket/getticket: a token-checked call that
// returns the same ticket per account and type while it is valid.
func (s *Server) getTicket(w http.ResponseWriter, r *http.Request) {
	s.count("ticket")
	tk, ok := s.tokenCheck(w, r)
	if !ok {
		return
	}
	typ := r.URL.Query().Get("type")
	if typ != "jsapi" && typ != "wx_card" {
		writeErr(w, 40097, "")
		return
	}
	s.mu.Lock()
	now := s.opts.Now()
	key := tk.owner + "/" + typ
	tc := s.tickets[key]
	if tc == nil || !now.Before(tc.expires) {
		tc = &ticket{value: "TKT_" + randString(48), expires: now.Add(s.tokenTTL())}
		s.tickets[key] = tc
	}
	ans := ticketAnswer{0, "ok", tc.value, int(tc.expires.Sub(now) / time.Second)}
	s.mu.Unlock()
	writeJSON(w, ans)
}

// snsCheck rejects an access_token on /sns/* (these take appid+secret, and
// a gateway that injects its token there leaks it) and checks grant_type.
func (s *Server) snsCheck(w http.ResponseWriter, r *http.Request, grant string) bool {
	s.count("sns")
	q := r.URL.Query()
	if q.Has("access_token") {
		writeErr(w, 40097, "invalid args, access_token must not be sent")
		return false
	}
	if q.Get("grant_type") != grant {
		writeErr(w, 40002, "")
		return false
	}
	return true
}

// openID derives a stable fake openid from a login code.
func openID(code string) string {
	h := sha256.Sum256([]byte("openid:" + code))
	return "o_" + hex.EncodeToString(h[:12])
}

// jscode2session serves the mini program login.
func (s *Server) jscode2session(w http.ResponseWriter, r *http.Request) {
	if !s.snsCheck(w, r, "authorization_code") {
		return
	}
	q := r.URL.Query()
	if code := s.checkApp(q.Get("appid"), q.Get("secret")); code != 0 {
		writeErr(w, code, "")
		return
	}
	if q.Get("js_code") == "" {
		writeErr(w, 40029, "")
		return
	}
	writeJSON(w, map[string]string{"openid": openID(q.Get("js_code")), "session_key": randString(18)})
}

// oauthAccessToken serves web OAuth code exchange.
func (s *Server) oauthAccessToken(w http.ResponseWriter, r *http.Request) {
	if !s.snsCheck(w, r, "authorization_code") {
		return
	}
	q := r.URL.Query()
	if code := s.checkApp(q.Get("appid"), q.Get("secret")); code != 0 {
		writeErr(w, code, "")
		return
	}
	if q.Get("code") == "" {
		writeErr(w, 40029, "")
		return
	}
	s.oauthIssue(w, openID(q.Get("code")))
}

// oauthRefresh serves /sns/oauth2/refresh_token, which needs appid only.
func (s *Server) oauthRefresh(w http.ResponseWriter, r *http.Request) {
	if !s.snsCheck(w, r, "refresh_token") {
		return
	}
	q := r.URL.Query()
	if q.Get("appid") == "" || q.Get("appid") != s.opts.AppID {
		writeErr(w, 40013, "")
		return
	}
	s.mu.Lock()
	oid, ok := s.refresh[q.Get("refresh_token")]
	s.mu.Unlock()
	if !ok {
		writeErr(w, 40030, "")
		return
	}
	s.oauthIssue(w, oid)
}

// oauthIssue issues a user token; it also passes the API token check so
// /sns/userinfo style calls work.
func (s *Server) oauthIssue(w http.ResponseWriter, oid string) {
	s.mu.Lock()
	t := s.newToken(kindOAuth, "user:"+oid, s.opts.Now())
	rt := "REFRESH_" + randString(36)
	s.refresh[rt] = oid
	s.mu.Unlock()
	writeJSON(w, map[string]any{
		"access_token":  t,
		"expires_in":    int(s.tokenTTL() / time.Second),
		"refresh_token": rt,
		"openid":        oid,
		"scope":         "snsapi_base",
	})
}
