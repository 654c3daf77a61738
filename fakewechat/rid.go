package fakewechat

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Rid records: WeChat keeps every request for 7 days under the rid in its
// errmsg and gives it back through /cgi-bin/openapi/rid/get, credentials
// included. The fake does the same so tests can prove a gateway never lets
// a caller read a token or the secret back that way.

const (
	// DefaultRIDRecords is how many rid records a fake keeps by default.
	DefaultRIDRecords = 1024
	// ridTTL is WeChat's 7-day rid retention; older rids answer 76001.
	ridTTL = 7 * 24 * time.Hour
	// maxRecordBody caps the request and response bytes kept per record,
	// so media traffic cannot make the records grow without bound.
	maxRecordBody = 16 << 10
)

// Record is what the fake kept about one request, as rid/get returns it.
type Record struct {
	RID      string
	Owner    string // account the request belongs to: "app", "work:<agent>", ...; "" = none
	SNS      bool   // a /sns/* call: rid/get answers 76022
	Method   string
	Path     string
	RawQuery string // as received, access_token included
	Body     string // raw request body (first 16 KiB), e.g. stable_token's secret
	Invoked  time.Time
	Cost     time.Duration
	Status   int
	Response string // response body as written, before gzip (first 16 KiB)
	ClientIP string
}

// ridStore is a ring of the last N records plus an index by rid.
type ridStore struct {
	ring []string
	next int
	byID map[string]*Record
	last string
}

func newRIDStore(n int) ridStore {
	return ridStore{ring: make([]string, n), byID: make(map[string]*Record, n)}
}

// add stores rec, evicting the oldest record when the ring is full.
// Callers hold s.mu.
func (st *ridStore) add(rec *Record) {
	if old := st.ring[st.next]; old != "" {
		delete(st.byID, old)
	}
	st.ring[st.next] = rec.RID
	st.next = (st.next + 1) % len(st.ring)
	st.byID[rec.RID] = rec
	st.last = rec.RID
}

// recorder captures what a handler answers and carries the request's rid,
// so writeErr can put it into errmsg.
type recorder struct {
	http.ResponseWriter
	rid    string
	status int
	body   []byte
}

func (rw *recorder) WriteHeader(code int) {
	if rw.status == 0 {
		rw.status = code
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *recorder) Write(p []byte) (int, error) {
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	if room := maxRecordBody - len(rw.body); room > 0 {
		rw.body = append(rw.body, p[:min(room, len(p))]...)
	}
	return rw.ResponseWriter.Write(p)
}

func (rw *recorder) Flush() {
	if f, ok := rw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (rw *recorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

// ridOf returns the rid of the request w answers (a fresh one if w is not
// the fake's own writer).
func ridOf(w http.ResponseWriter) string {
	if rw, ok := w.(*recorder); ok {
		return rw.rid
	}
	return rid()
}

// bodyTap keeps the first maxRecordBody bytes a handler reads.
type bodyTap struct {
	io.ReadCloser
	buf []byte
}

func (b *bodyTap) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if room := maxRecordBody - len(b.buf); room > 0 && n > 0 {
		b.buf = append(b.buf, p[:min(room, n)]...)
	}
	return n, err
}

// topUp reads what the handler left unread, up to the cap, so a rejected
// POST still shows its body in rid/get, as on WeChat.
func (b *bodyTap) topUp() {
	if room := maxRecordBody - len(b.buf); room > 0 {
		_, _ = io.Copy(io.Discard, io.LimitReader(b, int64(room)))
	}
}

// record stores the finished request under its rid.
func (s *Server) record(rw *recorder, r *http.Request, tap *bodyTap, start time.Time, invoked time.Time) {
	tap.topUp()
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	rec := &Record{
		RID:      rw.rid,
		SNS:      strings.HasPrefix(r.URL.Path, "/sns/"),
		Method:   r.Method,
		Path:     r.URL.Path,
		RawQuery: r.URL.RawQuery,
		Body:     string(tap.buf),
		Invoked:  invoked,
		Cost:     time.Since(start),
		Status:   rw.status,
		Response: string(rw.body),
		ClientIP: ip,
	}
	s.mu.Lock()
	rec.Owner = s.ownerOf(r, tap.buf)
	s.rids.add(rec)
	s.mu.Unlock()
}

// ownerOf names the account a request belongs to, as WeChat would: by the
// credentials in it. Callers hold s.mu.
func (s *Server) ownerOf(r *http.Request, body []byte) string {
	q, _ := url.ParseQuery(r.URL.RawQuery)
	switch r.URL.Path {
	case "/cgi-bin/token", "/sns/jscode2session", "/sns/oauth2/access_token", "/sns/oauth2/refresh_token":
		if q.Get("appid") != "" && q.Get("appid") == s.opts.AppID {
			return "app"
		}
		return ""
	case "/cgi-bin/stable_token":
		var req stableRequest
		if json.Unmarshal(body, &req) == nil && req.AppID != "" && req.AppID == s.opts.AppID {
			return "app"
		}
		return ""
	case "/cgi-bin/gettoken":
		if q.Get("corpid") == "" || q.Get("corpid") != s.opts.CorpID {
			return ""
		}
		for agent, sec := range s.opts.CorpSecrets {
			if sec != "" && sec == q.Get("corpsecret") {
				return "work:" + agent
			}
		}
		return ""
	}
	if owner := s.componentOwner(r, q, body); owner != "" {
		return owner
	}
	if vals := q["access_token"]; len(vals) == 1 {
		if tk := s.tokens[vals[0]]; tk != nil {
			return tk.owner
		}
	}
	return ""
}

// ridRequest is the "request" object of a rid/get answer.
type ridRequest struct {
	InvokeTime   int64  `json:"invoke_time"`
	CostInMS     int64  `json:"cost_in_ms"`
	RequestURL   string `json:"request_url"`
	RequestBody  string `json:"request_body"`
	ResponseBody string `json:"response_body"`
	ClientIP     string `json:"client_ip"`
}

// ridGet serves POST /cgi-bin/openapi/rid/get: the record of a rid of the
// caller's own account (76003 otherwise), 76001 when unknown or older than
// 7 days, 76022 for /sns/* rids, 76002 for an empty rid.
func (s *Server) ridGet(w http.ResponseWriter, r *http.Request, tk *token) {
	var req struct {
		RID string `json:"rid"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		writeErr(w, 47001, "")
		return
	}
	if strings.TrimSpace(req.RID) == "" {
		writeErr(w, 76002, "")
		return
	}
	s.mu.Lock()
	rec := s.rids.byID[req.RID]
	now := s.opts.Now()
	var ans ridRequest
	code := 0
	switch {
	case rec == nil || now.Sub(rec.Invoked) > ridTTL:
		code = 76001
	case rec.SNS:
		code = 76022
	case rec.Owner == "" || rec.Owner != tk.owner:
		code = 76003
	default:
		ans = ridRequest{
			InvokeTime:   rec.Invoked.Unix(),
			CostInMS:     rec.Cost.Milliseconds(),
			RequestURL:   rec.RawQuery,
			RequestBody:  rec.Body,
			ResponseBody: rec.Response,
			ClientIP:     rec.ClientIP,
		}
	}
	s.mu.Unlock()
	if code != 0 {
		writeErr(w, code, "")
		return
	}
	writeJSON(w, struct {
		ErrCode int        `json:"errcode"`
		ErrMsg  string     `json:"errmsg"`
		Request ridRequest `json:"request"`
	}{0, "ok", ans})
}

// RecordOf returns the record kept under rid, if it is still kept.
func (s *Server) RecordOf(rid string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.rids.byID[rid]
	if rec == nil {
		return Record{}, false
	}
	return *rec, true
}

// LastRID returns the rid of the newest finished request ("" if none).
func (s *Server) LastRID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rids.last
}

// Records returns the kept records whose path is path ("" = all),
// oldest first; e.g. Records("/cgi-bin/stable_token") finds the rids of a
// gateway's token fetches.
func (s *Server) Records(path string) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	n := len(s.rids.ring)
	for i := range n {
		id := s.rids.ring[(s.rids.next+i)%n]
		if rec := s.rids.byID[id]; rec != nil && (path == "" || rec.Path == path) {
			out = append(out, *rec)
		}
	}
	return out
}
