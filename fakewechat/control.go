package fakewechat

import (
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// controls hold the failures a test injected into the token endpoints
// (/cgi-bin/token, /cgi-bin/stable_token, /cgi-bin/gettoken).
type controls struct {
	failCode int
	failMsg  string
	delay    time.Duration
	down     int
	raw      string
	gzip     bool
	// glitchUntil: until then every API call answers 40001 (Glitch).
	glitchUntil time.Time
}

// observations are what tests assert on.
type observations struct {
	fetches   map[string]int
	apiCalls  int
	rejected  map[int]int
	lastQuery string
	headers   HeaderReport
}

// HeaderReport says whether caller credentials that a gateway should strip
// reached the fake, on any request since the last Reset.
type HeaderReport struct {
	Authorization int    // requests that carried an Authorization header
	Cookie        int    // requests that carried a Cookie header
	LastPath      string // path of the last request that carried either
}

// noteHeaders counts Authorization and Cookie headers.
func (s *Server) noteHeaders(r *http.Request) {
	auth, cookie := len(r.Header.Values("Authorization")) > 0, len(r.Header.Values("Cookie")) > 0
	if !auth && !cookie {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if auth {
		s.obs.headers.Authorization++
	}
	if cookie {
		s.obs.headers.Cookie++
	}
	s.obs.headers.LastPath = r.URL.Path
}

// Headers reports the Authorization and Cookie headers that arrived.
func (s *Server) Headers() HeaderReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.obs.headers
}

// Glitch makes every API call answer 40001 for d on the fake's clock, as
// during a WeChat-wide incident; the token endpoints keep answering
// normally and no token is revoked. Glitch(0) ends it.
func (s *Server) Glitch(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.glitchUntil = time.Time{}
	if d > 0 {
		s.ctl.glitchUntil = s.opts.Now().Add(d)
	}
}

func newObservations() observations {
	return observations{fetches: make(map[string]int), rejected: make(map[int]int)}
}

// Fetches counts calls to a token-like endpoint, failed ones included:
// "classic" (/cgi-bin/token), "stable" (every /cgi-bin/stable_token call,
// forced or not), "stable_force" (the force_refresh:true subset), "work"
// (/cgi-bin/gettoken), "ticket" (/cgi-bin/ticket/getticket), "sns"
// (the three /sns/* endpoints), "probe" and "probe_rejected"
// (/cgi-bin/get_api_domain_ip) and "always_40001" (AlwaysInvalidPath).
func (s *Server) Fetches(api string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.obs.fetches[api]
}

// APICalls counts API calls (getticket included) that passed the token check.
func (s *Server) APICalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.obs.apiCalls
}

// Rejected counts API calls (getticket included) rejected by the token
// check with errcode (41001, 40001, 40014, 42001).
func (s *Server) Rejected(errcode int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.obs.rejected[errcode]
}

// LastAPIQuery returns the query of the last API call exactly as the fake
// received it, access_token included, so tests can check there was one.
func (s *Server) LastAPIQuery() url.Values {
	s.mu.Lock()
	raw := s.obs.lastQuery
	s.mu.Unlock()
	q, _ := url.ParseQuery(raw)
	return q
}

// Reset zeroes the observation counters and LastAPIQuery. Tokens, quotas
// and injected failures are kept (see ResetQuotas and the setters).
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.obs = newObservations()
}

// FailTokens makes the token endpoints answer errcode with errmsg ("" =
// WeChat's usual message, e.g. the whitelist IP for 40164) until
// FailTokens(0, "") clears it.
func (s *Server) FailTokens(errcode int, errmsg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.failCode, s.ctl.failMsg = errcode, errmsg
}

// SetTokenDelay makes the token endpoints sleep d before answering, to
// test single-flight and timeouts. The sleep ends early if the client
// goes away. 0 clears it.
func (s *Server) SetTokenDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.delay = d
}

// SetTokenDown makes the token endpoints answer HTTP status with an HTML
// page, like a broken proxy in front of WeChat. 0 clears it.
func (s *Server) SetTokenDown(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.down = status
}

// SetTokenResponse makes the token endpoints answer exactly body (HTTP 200,
// application/json), e.g. garbage, an empty access_token or a bad
// expires_in. "" clears it.
func (s *Server) SetTokenResponse(body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.raw = body
}

// SetGzip turns on gzip for every response to clients that accept it.
func (s *Server) SetGzip(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctl.gzip = on
}

func (s *Server) gzipOn() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ctl.gzip
}

func (s *Server) count(api string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.obs.fetches[api]++
}

// tokenEndpoint counts the fetch, applies injected failures in the order
// delay, down, raw body, errcode, and only then runs the real handler.
func (s *Server) tokenEndpoint(w http.ResponseWriter, r *http.Request, api string, h http.HandlerFunc) {
	s.mu.Lock()
	s.obs.fetches[api]++
	ctl := s.ctl
	s.mu.Unlock()

	if ctl.delay > 0 {
		t := time.NewTimer(ctl.delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	switch {
	case ctl.down != 0:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(ctl.down)
		text := http.StatusText(ctl.down)
		fmt.Fprintf(w, "<html><head><title>%d %s</title></head><body><center><h1>%d %s</h1></center><hr><center>nginx</center></body></html>\n",
			ctl.down, text, ctl.down, text)
	case ctl.raw != "":
		w.Header().Set("Content-Type", ctJSON)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(ctl.raw))
	case ctl.failCode != 0:
		writeErr(w, ctl.failCode, ctl.failMsg)
	default:
		h(w, r)
	}
}

// SetTokenTTL makes every token and ticket issued from now on live d, and
// say so in its expires_in, as when WeChat hands out a token with less
// life than its documented 7200 s; tokens already issued keep their
// expiry. A soak uses it to make natural expiry and refresh-ahead happen
// within a minute. 0 restores Options.TokenTTL.
func (s *Server) SetTokenTTL(d time.Duration) {
	if d <= 0 {
		d = s.opts.TokenTTL
	}
	s.ttl.Store(int64(d))
}

// tokenTTL is the lifetime of a token issued now. It is an atomic, not a
// field under s.mu, because some answers read it after the lock is gone.
func (s *Server) tokenTTL() time.Duration { return time.Duration(s.ttl.Load()) }
