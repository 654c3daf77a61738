// Package fakewechat is a fake WeChat / WeCom API server for integration
// tests of the caddy-wechat gateway. It follows the token rules in
// docs/wechat-token-rules.md closely enough that a gateway which survives
// it should survive the real thing: classic tokens are replaced on every
// fetch with a short overlap, stable tokens are shared and renewed only in
// their last minutes, errors come as HTTP 200 with text/plain bodies, and
// failures (revocation, expiry, outages, garbage) can be injected.
//
// Like WeChat it also keeps every request under a rid and gives it back
// through /cgi-bin/openapi/rid/get, credentials included (rid.go), and it
// can act as an open platform that pushes encrypted tickets and events
// and issues component and authorizer tokens (component.go).
package fakewechat

import (
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a fake server. Zero durations take WeChat's defaults.
type Options struct {
	// AppID and Secret are the official account / mini program credentials
	// accepted by /cgi-bin/token, /cgi-bin/stable_token and /sns/*.
	AppID, Secret string
	// CorpID and CorpSecrets are the WeCom credentials: agent name ->
	// corpsecret. Each secret has its own token.
	CorpID      string
	CorpSecrets map[string]string
	// TokenTTL is the lifetime of every token and ticket (default 7200s).
	TokenTTL time.Duration
	// Overlap is how long a replaced classic token keeps working (default 5m).
	Overlap time.Duration
	// RenewWindow is the tail of a stable token's life during which a
	// normal fetch issues a new one (default 5m).
	RenewWindow time.Duration
	// ClassicDailyLimit caps /cgi-bin/token calls per day with 45009, like
	// WeChat's 2000/day quota. 0 means unlimited, so load tests do not trip.
	ClassicDailyLimit int
	// Now is the clock; tests inject one to move time without sleeping.
	Now func() time.Time
	// Component makes the fake an open platform (第三方平台) too.
	Component ComponentOptions
	// RIDRecords is how many rid records are kept for rid/get (default
	// DefaultRIDRecords); the oldest is evicted first.
	RIDRecords int
}

// Server is the fake. It implements http.Handler and is safe for
// concurrent use; all control and observation methods are goroutine-safe.
type Server struct {
	opts Options

	mu      sync.Mutex
	tokens  map[string]*token // every token ever issued (until purged)
	purgeAt int               // map size that triggers the next purge

	classicCur string            // newest classic token
	stableCur  string            // current stable token
	workCur    map[string]string // corpsecret -> current WeCom token
	tickets    map[string]*ticket
	refresh    map[string]string // OAuth refresh_token -> openid

	quota   quotas
	ttl     atomic.Int64 // nanoseconds; SetTokenTTL changes it at run time
	ctl     controls
	obs     observations
	rids    ridStore
	uploads mediaStore
	open    *openPlatform // nil unless Options.Component.AppID is set
}

// New returns a fake server with o's defaults filled in.
func New(o Options) *Server {
	if o.TokenTTL <= 0 {
		o.TokenTTL = 7200 * time.Second
	}
	if o.Overlap <= 0 {
		o.Overlap = 5 * time.Minute
	}
	if o.RenewWindow <= 0 {
		o.RenewWindow = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RIDRecords <= 0 {
		o.RIDRecords = DefaultRIDRecords
	}
	secrets := make(map[string]string, len(o.CorpSecrets))
	for k, v := range o.CorpSecrets {
		secrets[k] = v
	}
	o.CorpSecrets = secrets
	s := &Server{
		opts:    o,
		tokens:  make(map[string]*token),
		workCur: make(map[string]string),
		tickets: make(map[string]*ticket),
		refresh: make(map[string]string),
		obs:     newObservations(),
		rids:    newRIDStore(o.RIDRecords),
	}
	s.ttl.Store(int64(o.TokenTTL))
	s.open = newOpenPlatform(&s.opts.Component)
	return s
}

// ServeHTTP gives every request a rid and keeps its record, then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start, invoked := time.Now(), s.opts.Now()
	s.noteHeaders(r)
	if s.gzipOn() && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		gw := newGzipWriter(w)
		defer gw.Close() // after the record: runs last
		w = gw
	}
	rw := &recorder{ResponseWriter: w, rid: rid()}
	tap := &bodyTap{ReadCloser: r.Body}
	if r.Body == nil {
		tap.ReadCloser = http.NoBody
	}
	r.Body = tap
	// The record is stored before ServeHTTP returns, so a small answer
	// (held in net/http's buffer until then) never reaches a client
	// before its rid can be looked up.
	defer s.record(rw, r, tap, start, invoked)
	s.route(rw, r)
}

// route sends token endpoints, /sns/* login endpoints and the ticket
// endpoint to their handlers; every other path is an API call.
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/cgi-bin/token":
		s.tokenEndpoint(w, r, "classic", s.classicToken)
	case "/cgi-bin/stable_token":
		s.stableEntry(w, r)
	case "/cgi-bin/gettoken":
		s.tokenEndpoint(w, r, "work", s.workToken)
	case "/cgi-bin/ticket/getticket":
		s.getTicket(w, r)
	case "/sns/jscode2session":
		s.jscode2session(w, r)
	case "/sns/oauth2/access_token":
		s.oauthAccessToken(w, r)
	case "/sns/oauth2/refresh_token":
		s.oauthRefresh(w, r)
	default:
		if s.open != nil && strings.HasPrefix(r.URL.Path, "/cgi-bin/component/") {
			s.componentAPI(w, r)
			return
		}
		s.apiCall(w, r)
	}
}

// Content types as WeChat sends them: errors are text/plain, which is the
// trap for gateways that only sniff application/json.
const (
	ctJSON  = "application/json; encoding=utf-8"
	ctError = "text/plain"
)

// WhitelistIP is the caller IP named in the default 40164 message.
const WhitelistIP = "203.0.113.7"

// errmsgs are the default messages used by writeErr and FailTokens.
var errmsgs = map[int]string{
	-1:    "system error",
	40001: "invalid credential, access_token is invalid or not latest",
	40002: "invalid grant_type",
	40013: "invalid appid",
	40014: "invalid access_token",
	40029: "invalid code",
	40030: "invalid refresh_token",
	40097: "invalid args",
	40125: "invalid appsecret",
	40164: "invalid ip " + WhitelistIP + " ipv6 ::ffff:" + WhitelistIP + ", not in whitelist",
	40243: "AppSecret has been frozen",
	41001: "access_token missing",
	41018: "missing component_access_token",
	42001: "access_token expired",
	45009: "reach max api daily quota limit",
	45011: "api minute-quota reach limit  mustslower  retry next minute",
	47001: "data format error",
	48001: "api unauthorized",
	61003: "component is not authorized by this account",
	61004: "access clientip is not registered",
	61005: "component ticket is expired",
	61006: "component ticket is invalid",
	61009: "code is invalid",
	61010: "code is expired",
	61023: "refresh_token is invalid",
	76001: "rid not found",
	76002: "rid is error",
	76003: "could not query this rid,no permission",
	76022: "could not query this rid,sns api not supported",
	89503: "this call needs admin confirmation",
}

// rid mimics the request id WeChat appends to every errmsg.
func rid() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:16] + "-" + h[16:]
}

// writeErr answers like WeChat does: HTTP 200, text/plain, small JSON.
func writeErr(w http.ResponseWriter, code int, msg string) {
	if msg == "" {
		msg = errmsgs[code]
		if msg == "" {
			msg = "error"
		}
	}
	body, _ := json.Marshal(struct {
		ErrCode int    `json:"errcode"`
		ErrMsg  string `json:"errmsg"`
	}{code, msg + " rid: " + ridOf(w)})
	w.Header().Set("Content-Type", ctError)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// writeJSON answers a success with WeChat's JSON content type.
func writeJSON(w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeErr(w, -1, "")
		return
	}
	w.Header().Set("Content-Type", ctJSON)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// gzipWriter compresses the whole response; Flush pushes compressed bytes
// out so streamed media still arrives in chunks.
type gzipWriter struct {
	http.ResponseWriter
	gz          *gzip.Writer
	wroteHeader bool
}

func newGzipWriter(w http.ResponseWriter) *gzipWriter {
	return &gzipWriter{ResponseWriter: w, gz: gzip.NewWriter(w)}
}

func (g *gzipWriter) WriteHeader(code int) {
	if g.wroteHeader {
		return
	}
	g.wroteHeader = true
	h := g.Header()
	h.Del("Content-Length")
	h.Set("Content-Encoding", "gzip")
	h.Add("Vary", "Accept-Encoding")
	g.ResponseWriter.WriteHeader(code)
}

func (g *gzipWriter) Write(p []byte) (int, error) {
	if !g.wroteHeader {
		g.WriteHeader(http.StatusOK)
	}
	return g.gz.Write(p)
}

func (g *gzipWriter) Flush() {
	_ = g.gz.Flush()
	if f, ok := g.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Close finishes the gzip stream; a response with no body stays empty.
func (g *gzipWriter) Close() {
	if !g.wroteHeader {
		return
	}
	_ = g.gz.Close()
}

// Unwrap lets http.ResponseController reach the real writer.
func (g *gzipWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }
