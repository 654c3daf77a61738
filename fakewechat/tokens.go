package fakewechat

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"time"
)

// kind says which endpoint issued a token; it decides the token prefix and
// which error codes a bad token earns (WeCom answers 40014, WeChat 40001).
type kind int

const (
	kindClassic kind = iota
	kindStable
	kindWork
	kindOAuth
	kindComponent
	kindAuthorizer
)

var prefixes = map[kind]string{
	kindClassic: "CLS_",
	kindStable:  "STB_",
	kindWork:    "WRK_",
	kindOAuth:   "OAUTH_",
	// Open platform tokens: component_access_token and
	// authorizer_access_token.
	kindComponent:  "CMP_",
	kindAuthorizer: "AUT_",
}

var kindNames = map[kind]string{
	kindClassic:    "classic",
	kindStable:     "stable",
	kindWork:       "work",
	kindOAuth:      "oauth",
	kindComponent:  "component",
	kindAuthorizer: "authorizer",
}

// state is what RevokeAll / ExpireAll / force_refresh did to a token.
type state int

const (
	live    state = iota
	revoked       // 40001 (WeCom 40014): revoked or replaced by force_refresh
	expired       // 42001: ExpireAll
)

// token is one issued access_token.
type token struct {
	kind    kind
	owner   string    // ticket owner: "app" or "work:<agent>"
	expires time.Time // natural expiry: 42001 after it
	cutoff  time.Time // classic overlap end: 40001 after it; zero = none
	state   state
}

// maxTokens bounds memory in long-running demos; older expired tokens are
// forgotten (they then answer "unknown", which is also a replay trigger).
const maxTokens = 4096

// newToken issues a token of kind k. Callers hold s.mu. The purge runs
// only when the map has doubled since the last one, so issuing stays O(1)
// amortized with 10,000 authorizers holding tokens.
func (s *Server) newToken(k kind, owner string, now time.Time) string {
	if len(s.tokens) >= max(maxTokens, s.purgeAt) {
		for t, tk := range s.tokens {
			if now.Sub(tk.expires) > 24*time.Hour {
				delete(s.tokens, t)
			}
		}
		s.purgeAt = 2 * len(s.tokens)
	}
	t := prefixes[k] + randString(36)
	s.tokens[t] = &token{kind: k, owner: owner, expires: now.Add(s.tokenTTL())}
	return t
}

// randString returns base64url text from n random bytes: the character
// set real tokens use ([A-Za-z0-9_-]), so gateways must not URL-mangle it.
func randString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// usable reports whether tk is live and not past its expiry or overlap.
func usable(tk *token, now time.Time) bool {
	if tk == nil || tk.state != live || !now.Before(tk.expires) {
		return false
	}
	return tk.cutoff.IsZero() || now.Before(tk.cutoff)
}

// check returns the errcode an API call with token t earns (0 = ok) and
// the token on success. Callers hold s.mu.
func (s *Server) check(t string, now time.Time) (int, *token) {
	tk := s.tokens[t]
	bad := 40001
	if strings.HasPrefix(t, prefixes[kindWork]) {
		bad = 40014 // WeCom's "invalid access_token"
	}
	switch {
	case tk == nil:
		return bad, nil
	case tk.state == revoked:
		return bad, nil
	case tk.state == expired:
		return 42001, nil
	case !now.Before(tk.expires):
		return 42001, nil
	case !tk.cutoff.IsZero() && !now.Before(tk.cutoff):
		return 40001, nil // replaced classic token after its overlap
	}
	return 0, tk
}

// ValidToken reports whether t would pass the token check right now.
func (s *Server) ValidToken(t string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	code, _ := s.check(t, s.opts.Now())
	return code == 0
}

// CurrentStable returns the current stable token ("" if none); for tests
// that want to compare what the gateway sends with what the fake issued.
func (s *Server) CurrentStable() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stableCur
}

// CurrentClassic returns the newest classic token ("" if none).
func (s *Server) CurrentClassic() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.classicCur
}

// RevokeAll makes every issued token answer 40001 (WeCom: 40014), like
// WeChat after a secret reset or another service's force_refresh. The next
// fetch of each kind issues a new token, stable normal fetches included.
func (s *Server) RevokeAll() { s.setAll(revoked) }

// ExpireAll makes every issued token answer 42001; the next fetch of each
// kind issues a new token.
func (s *Server) ExpireAll() { s.setAll(expired) }

func (s *Server) setAll(st state) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tk := range s.tokens {
		tk.state = st
	}
}

// ticket is a JS-SDK ticket. It belongs to the account, not to the token
// used to fetch it, so it survives token rotation like on WeChat.
type ticket struct {
	value   string
	expires time.Time
}

// quotas models WeChat's call limits. Days are counted in China time.
type quotas struct {
	day          string
	classicToday int
	forceToday   int
	lastForce    time.Time
}

var chinaTime = time.FixedZone("CST", 8*3600)

// roll resets daily counts when the (China) date changes.
func (q *quotas) roll(now time.Time) {
	if d := now.In(chinaTime).Format("2006-01-02"); d != q.day {
		q.day, q.classicToday, q.forceToday = d, 0, 0
	}
}

// forceAllowed applies the force_refresh limits: 30 s apart (45011) and
// 20 per day (45009). A refused call does not use up quota.
func (q *quotas) forceAllowed(now time.Time) int {
	q.roll(now)
	if !q.lastForce.IsZero() && now.Sub(q.lastForce) < 30*time.Second {
		return 45011
	}
	if q.forceToday >= 20 {
		return 45009
	}
	q.forceToday++
	q.lastForce = now
	return 0
}

// ResetQuotas forgets the classic daily count and force_refresh history,
// so a test can force_refresh again without moving its clock.
func (s *Server) ResetQuotas() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.quota = quotas{}
}

// expiresIn is the whole seconds left, as WeChat reports a reused token.
func expiresIn(tk *token, now time.Time) int {
	return int(tk.expires.Sub(now) / time.Second)
}
