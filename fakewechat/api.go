package fakewechat

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// tokenCheck runs the access_token check every API call gets and records
// the call. It writes the error itself and returns ok=false on rejection.
// Two access_token parameters are rejected with 40001: a gateway must
// replace the client's token, never append a second one.
func (s *Server) tokenCheck(w http.ResponseWriter, r *http.Request) (*token, bool) {
	return s.checkCall(w, r, false)
}

// checkCall is tokenCheck; probe calls (get_api_domain_ip) are counted
// apart, in Fetches("probe") and Fetches("probe_rejected"), so a gateway's
// probes do not blur APICalls and Rejected.
func (s *Server) checkCall(w http.ResponseWriter, r *http.Request, probe bool) (*token, bool) {
	q, _ := url.ParseQuery(r.URL.RawQuery)
	vals := q["access_token"]
	s.mu.Lock()
	now := s.opts.Now()
	s.obs.lastQuery = r.URL.RawQuery
	code, tk := 41001, (*token)(nil)
	switch {
	case len(vals) > 1:
		code = 40001
	case len(vals) == 1 && vals[0] != "":
		code, tk = s.check(vals[0], now)
	}
	if code == 0 && now.Before(s.ctl.glitchUntil) {
		code, tk = 40001, nil // a WeChat-wide glitch: every token rejected
	}
	switch {
	case probe:
		s.obs.fetches["probe"]++
		if code != 0 {
			s.obs.fetches["probe_rejected"]++
		}
	case code != 0:
		s.obs.rejected[code]++
	default:
		s.obs.apiCalls++
	}
	s.mu.Unlock()
	if code != 0 {
		writeErr(w, code, "")
		return nil, false
	}
	return tk, true
}

// AlwaysInvalidPath answers 40001 whatever the token, like an API that
// checks a credential of the caller's own (component_access_token): a
// fresh access_token cannot fix it. Calls count in Fetches("always_40001").
const AlwaysInvalidPath = "/cgi-bin/test/always_40001"

// apiCall serves every path that is not a token or login endpoint.
func (s *Server) apiCall(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case AlwaysInvalidPath:
		s.count("always_40001")
		writeErr(w, 40001, "")
		return
	case "/cgi-bin/get_api_domain_ip":
		if _, ok := s.checkCall(w, r, true); ok {
			writeJSON(w, map[string][]string{"ip_list": {"101.226.103.0/25", "101.226.233.128/25", "58.247.206.128/25"}})
		}
		return
	}
	tk, ok := s.tokenCheck(w, r)
	if !ok {
		return
	}
	switch r.URL.Path {
	case "/cgi-bin/openapi/rid/get":
		s.ridGet(w, r, tk)
	case "/cgi-bin/media/get":
		s.media(w, r)
	case "/cgi-bin/media/upload":
		// A body that is not multipart is echoed, as before uploads were
		// modelled: the gateway's streaming tests post raw bytes here.
		if !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
			s.echo(w, r, tk)
			return
		}
		s.mediaUpload(w, r, tk)
	case "/test/big-json":
		w.Header().Set("Content-Type", ctJSON)
		_, _ = w.Write(BigJSON())
	default:
		s.echo(w, r, tk)
	}
}

// Proof is the caddy_wechat_fake field of an ordinary API answer: it shows
// a newcomer's first curl that a valid token reached "WeChat", without
// showing the token itself.
type Proof struct {
	Token     string `json:"token"`      // always "valid": invalid ones never get here
	TokenKind string `json:"token_kind"` // classic, stable, work, oauth, authorizer
	RID       string `json:"rid"`        // this request's rid, for rid/get
}

func proofOf(w http.ResponseWriter, tk *token) Proof {
	return Proof{Token: "valid", TokenKind: kindNames[tk.kind], RID: ridOf(w)}
}

// Echo is the success body of an ordinary API call: it shows what reached
// WeChat through the gateway. Query has access_token removed.
type Echo struct {
	ErrCode     int    `json:"errcode"`
	ErrMsg      string `json:"errmsg"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	Query       string `json:"query"`
	BodyLen     int64  `json:"body_len"`
	BodySHA256  string `json:"body_sha256"`
	ContentType string `json:"content_type"`
	Host        string `json:"host"`
	Fake        Proof  `json:"caddy_wechat_fake"`
}

func (s *Server) echo(w http.ResponseWriter, r *http.Request, tk *token) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		writeErr(w, -1, "read body: "+err.Error())
		return
	}
	q, _ := url.ParseQuery(r.URL.RawQuery)
	q.Del("access_token")
	writeJSON(w, Echo{
		Method:      r.Method,
		Path:        r.URL.Path,
		Query:       q.Encode(),
		BodyLen:     n,
		BodySHA256:  hex.EncodeToString(h.Sum(nil)),
		ContentType: r.Header.Get("Content-Type"),
		Host:        r.Host,
		ErrMsg:      "ok",
		Fake:        proofOf(w, tk),
	})
}

// Media defaults and limits for /cgi-bin/media/get.
const (
	DefaultMediaSize = 1 << 20
	maxMediaSize     = 256 << 20
	mediaChunk       = 32 << 10
)

// media streams a deterministic binary body in flushed chunks: it is the
// case where a gateway must not buffer or sniff the response.
func (s *Server) media(w http.ResponseWriter, r *http.Request) {
	if s.uploaded(w, r.URL.Query().Get("media_id")) {
		return
	}
	size := DefaultMediaSize
	if v := r.URL.Query().Get("size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxMediaSize {
			writeErr(w, 40097, "invalid size")
			return
		}
		size = n
	}
	h := w.Header()
	h.Set("Content-Type", "image/jpeg")
	h.Set("Content-Disposition", `attachment; filename="media.jpg"`)
	h.Set("Content-Length", strconv.Itoa(size))
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	buf := make([]byte, mediaChunk)
	for off := 0; off < size; off += mediaChunk {
		chunk := buf[:min(mediaChunk, size-off)]
		fillMedia(chunk, off)
		if _, err := w.Write(chunk); err != nil {
			return
		}
		if f != nil {
			f.Flush()
		}
	}
}

// fillMedia writes the media bytes for offsets off..off+len(b). The body
// starts with a JPEG magic so content sniffers see an image.
func fillMedia(b []byte, off int) {
	magic := [...]byte{0xFF, 0xD8, 0xFF, 0xE0}
	for i := range b {
		p := off + i
		if p < len(magic) {
			b[i] = magic[p]
			continue
		}
		x := uint32(p) * 2654435761
		b[i] = byte(x>>24) ^ byte(p)
	}
}

// MediaBytes returns the body /cgi-bin/media/get?size=n streams.
func MediaBytes(n int) []byte {
	b := make([]byte, n)
	fillMedia(b, 0)
	return b
}

// MediaSHA256 returns the hex SHA-256 of MediaBytes(n).
func MediaSHA256(n int) string {
	sum := sha256.Sum256(MediaBytes(n))
	return hex.EncodeToString(sum[:])
}

var (
	bigOnce sync.Once
	bigBody []byte
)

// BigJSON returns the /test/big-json body: valid JSON over 64 KiB whose
// top-level errcode is 0 but which contains "errcode":40001 early in a
// nested object and again escaped inside a string deep in it. A gateway
// that sniffs bytes or prefixes instead of only small bodies falls for it.
func BigJSON() []byte {
	bigOnce.Do(func() {
		var b strings.Builder
		b.WriteString(`{"data":{"audit":{"last_error":{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest"}},"items":[`)
		for i := range 800 {
			if i > 0 {
				b.WriteByte(',')
			}
			text := fmt.Sprintf("item %04d lorem ipsum dolor sit amet, consectetur adipiscing elit", i)
			if i == 700 {
				text = `copied from a log: {"errcode":40001,"errmsg":"invalid credential"}`
			}
			t, _ := json.Marshal(text)
			fmt.Fprintf(&b, `{"id":%d,"nested":{"deeper":{"text":%s}}}`, i, t)
		}
		b.WriteString(`]},"errcode":0,"errmsg":"ok"}`)
		bigBody = []byte(b.String())
	})
	return bigBody
}
