package gateway

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// RedactedMark replaces a credential in anything the gateway returns.
const RedactedMark = "[redacted by caddy-wechat]"

// MinNeedle keeps very short values out of the scrub: replacing them would
// garble ordinary text and they are not worth stealing.
const MinNeedle = 8

// TokenRing remembers the last tokens this transport sent, so that a token
// replaced a moment ago is still scrubbed when WeChat echoes it.
type TokenRing struct {
	last atomic.Pointer[credential.Token]
	gen  atomic.Uint64
	mu   sync.Mutex
	vals [4]string
	next int
}

// Note records e; the common case (same token as last time) is one load.
func (r *TokenRing) Note(e *credential.Token) {
	if r == nil || e == nil || r.last.Load() == e {
		return
	}
	r.last.Store(e)
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.vals {
		if v == e.Value {
			return
		}
	}
	r.vals[r.next] = e.Value
	r.next = (r.next + 1) % len(r.vals)
	r.gen.Add(1)
}

// Gen changes whenever the ring does: a needle set built for one Gen is
// stale at the next.
func (r *TokenRing) Gen() uint64 {
	if r == nil {
		return 0
	}
	return r.gen.Load()
}

// AppendTo appends the ring's tokens to dst.
func (r *TokenRing) AppendTo(dst []string) []string {
	if r == nil {
		return dst
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.vals {
		if v != "" {
			dst = append(dst, v)
		}
	}
	return dst
}

// Needles is what the scrub looks for, rebuilt by its host only when the
// key it was built for changes, so the hot path allocates nothing.
type Needles struct {
	key   NeedleKey
	strs  []string
	bytes [][]byte
	min   int // length of the shortest needle
	hits  *Hits
}

// NeedleKey is what a set of needles was built for: a host keeps one set
// per key and rebuilds it when the key changes.
type NeedleKey struct {
	Token     *credential.Token // the account's or the authorizer's current token
	Component *credential.Token // the open platform's current component token
	Gen       uint64            // TokenRing.Gen of the tokens sent lately
}

// Values are the values scrubbed, longest first (never to be changed).
func (ns *Needles) Values() []string { return ns.strs }

// Key is the key the set was built for.
func (ns *Needles) Key() NeedleKey { return ns.key }

// Counter counts; a prometheus.Counter is one.
type Counter interface{ Inc() }

// Hits are one host's redaction counters, resolved once so that a hit
// pays no label lookup; nil counts nothing.
type Hits struct{ Header, Body Counter }

// NewNeedles is the set of values to scrub, built for key and counted in
// hits: each credential raw, query- and path-escaped; values too short to
// be credentials are left out.
func NewNeedles(key NeedleKey, hits *Hits, values ...string) *Needles {
	ns := &Needles{key: key, hits: hits}
	add := func(s string) {
		if len(s) < MinNeedle {
			return
		}
		for _, x := range ns.strs {
			if x == s {
				return
			}
		}
		ns.strs = append(ns.strs, s)
		if ns.min == 0 || len(s) < ns.min {
			ns.min = len(s)
		}
	}
	for _, v := range values {
		add(v)
		add(url.QueryEscape(v))
		add(url.PathEscape(v))
	}
	// Longest first: both replacers take the first needle that matches at
	// a position, so a value that is a prefix of another (a token sharing
	// the secret's first bytes) must not win and leave the other's tail.
	slices.SortStableFunc(ns.strs, func(a, b string) int { return len(b) - len(a) })
	// The byte needles alias the strings: they are only ever read, and a
	// set kept per authorizer (10,000 of them) then holds no copy.
	ns.bytes = make([][]byte, len(ns.strs))
	for i, s := range ns.strs {
		ns.bytes[i] = unsafe.Slice(unsafe.StringData(s), len(s))
	}
	return ns
}

// inString reports whether s holds a needle.
func (ns *Needles) inString(s string) bool {
	if len(s) < ns.min || ns.min == 0 {
		return false
	}
	for _, n := range ns.strs {
		if strings.Contains(s, n) {
			return true
		}
	}
	return false
}

// inBytes reports whether b holds a needle: a few bytes.Index scans.
func (ns *Needles) inBytes(b []byte) bool {
	if len(b) < ns.min || ns.min == 0 {
		return false
	}
	for _, n := range ns.bytes {
		if bytes.Contains(b, n) {
			return true
		}
	}
	return false
}

func (ns *Needles) replaceString(s string) string {
	for _, n := range ns.strs {
		s = strings.ReplaceAll(s, n, RedactedMark)
	}
	return s
}

func (ns *Needles) replaceBytes(b []byte) []byte {
	for _, n := range ns.bytes {
		if bytes.Contains(b, n) {
			ns.hit(true)
			b = bytes.ReplaceAll(b, n, []byte(RedactedMark))
		}
	}
	return b
}

// hit counts one replacement in a header value or a body.
func (ns *Needles) hit(body bool) {
	switch {
	case ns.hits == nil:
	case body:
		ns.hits.Body.Inc()
	default:
		ns.hits.Header.Inc()
	}
}

// scrubHeader redacts every header value that holds a needle (Location,
// Set-Cookie, anything WeChat or a middlebox might echo).
func (ns *Needles) scrubHeader(h http.Header) {
	for k, vs := range h {
		for i, v := range vs {
			if ns.inString(v) {
				ns.hit(false)
				vs[i] = ns.replaceString(v)
				h[k] = vs
			}
		}
	}
}

// Scrub removes every value in ns from an answer's headers and, for
// text, its body, and redacts rid/get field by field, judged on p, the
// path that was sent upstream (never the caller's, which may carry a
// prefix such as /authorizer/{appid}/). Every transport of the gateway
// runs its answers through it. An answer in an encoding the scrub cannot
// read (the upstream is offered gzip at most, so only a misbehaving or
// hostile one sends deflate, br or zstd) is refused, never passed on
// unread.
func Scrub(p string, resp *http.Response, ns *Needles) error {
	ns.scrubHeader(resp.Header)
	ns.scrubHeader(resp.Trailer)
	if resp.Body == nil || resp.Body == http.NoBody || resp.StatusCode == http.StatusSwitchingProtocols {
		return nil // an upgraded connection is not an answer to read
	}
	if !readableEncoding(resp.Header.Get("Content-Encoding")) {
		return errUnreadableEncoding
	}
	if isRidGet(p) {
		return scrubRidGet(resp, ns)
	}
	if _, ok := resp.Body.(*sniffBody); !ok && sniffable(resp) {
		if _, err := sniff(resp); err != nil {
			return err
		}
	}
	if sb, ok := resp.Body.(*sniffBody); ok {
		scrubSniffed(resp, sb, ns)
		return nil
	}
	if textual(resp.Header.Get("Content-Type")) {
		streamScrub(resp, ns)
	}
	return nil
}

// errUnreadableEncoding refuses an answer the scrub cannot see through.
var errUnreadableEncoding = errors.New("caddy-wechat: WeChat answered in an encoding other than gzip, which the gateway cannot check for credentials; refused")

// readableEncoding reports the content codings the scrub reads.
func readableEncoding(ce string) bool {
	return ce == "" || strings.EqualFold(ce, "gzip") || strings.EqualFold(ce, "identity")
}

// scrubSniffed scans a small buffered body and rewrites it only on a hit,
// so the common answer costs a few scans and no decode.
func scrubSniffed(resp *http.Response, sb *sniffBody, ns *Needles) {
	data := sb.bytes()
	gz := strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip")
	if gz {
		plain := gunzip(data)
		if len(plain) >= 16*sniffLimit {
			// Inflates past what gunzip looks at: scrub it as a stream
			// rather than send a cut answer.
			resp.Body = &prefixBody{Reader: bytes.NewReader(bytes.Clone(data)), c: io.NopCloser(nil)}
			sb.Close()
			streamScrub(resp, ns)
			return
		}
		if plain != nil {
			data = plain
		}
	}
	if !ns.inBytes(data) {
		return
	}
	clean := ns.replaceBytes(bytes.Clone(data))
	sb.Close()
	setBody(resp, clean, gz)
}

// setBody replaces resp's body with plain bytes.
func setBody(resp *http.Response, b []byte, dropEncoding bool) {
	if dropEncoding {
		resp.Header.Del("Content-Encoding")
		resp.Uncompressed = true
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
}

// textual tells whether a content type could carry text that echoes a
// credential; media and octet streams pass untouched.
func textual(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	if mt == "" || !strings.Contains(mt, "/") {
		return true
	}
	return strings.HasPrefix(mt, "text/") || strings.HasSuffix(mt, "json") || strings.HasSuffix(mt, "xml") ||
		strings.HasSuffix(mt, "javascript") || mt == "application/x-www-form-urlencoded"
}

// streamScrub wraps a large text body in a replacer that also catches a
// needle split across reads. A gzip body is inflated for this (and sent
// plain); scrubAnswer has refused any other encoding.
func streamScrub(resp *http.Response, ns *Needles) {
	ce := resp.Header.Get("Content-Encoding")
	body := resp.Body
	sr := &scrubReader{ns: ns, c: body, src: body}
	if strings.EqualFold(ce, "gzip") {
		sr.gz = true
		resp.Header.Del("Content-Encoding")
		resp.Uncompressed = true
	}
	resp.Body = sr
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
}

// scrubReader replaces needles in a stream. It holds back the last
// (longest needle - 1) bytes of each read, so a needle split across two
// reads is still whole when it is looked for.
type scrubReader struct {
	ns  *Needles
	src io.Reader
	c   io.Closer
	gz  bool // src is gzip, inflated on the first Read

	buf    []byte // one read
	raw    []byte // unexamined input
	out    []byte // ready output
	outPos int    // how much of out was read
	eof    bool
	err    error
	hold   int
}

func (s *scrubReader) Read(p []byte) (int, error) {
	for s.outPos == len(s.out) {
		if s.err != nil {
			return 0, s.err
		}
		s.fill()
	}
	n := copy(p, s.out[s.outPos:])
	s.outPos += n
	return n, nil
}

func (s *scrubReader) fill() {
	if s.gz {
		s.gz = false
		zr, err := gzip.NewReader(s.src)
		if err != nil {
			s.err = err
			return
		}
		s.src = zr
	}
	if s.hold == 0 {
		for _, n := range s.ns.bytes {
			s.hold = max(s.hold, len(n)-1)
		}
	}
	if s.buf == nil {
		s.buf = make([]byte, 32<<10)
	}
	n, err := s.src.Read(s.buf)
	s.raw = append(s.raw, s.buf[:n]...)
	if err != nil {
		s.eof = true
	}
	pos := 0
	s.out, s.outPos = s.out[:0], 0
	for {
		at, nl := -1, 0
		for _, nd := range s.ns.bytes {
			if i := bytes.Index(s.raw[pos:], nd); i >= 0 && (at < 0 || i < at) {
				at, nl = i, len(nd)
			}
		}
		if at < 0 {
			break
		}
		s.out = append(s.out, s.raw[pos:pos+at]...)
		s.out = append(s.out, RedactedMark...)
		s.ns.hit(true)
		pos += at + nl
	}
	safe := len(s.raw)
	if !s.eof {
		safe -= s.hold
	}
	if safe > pos {
		s.out = append(s.out, s.raw[pos:safe]...)
		pos = safe
	}
	s.raw = append(s.raw[:0], s.raw[pos:]...)
	if s.eof {
		s.out = append(s.out, s.raw...)
		s.raw = s.raw[:0]
		s.err = err
	}
}

func (s *scrubReader) Close() error { return s.c.Close() }

// --- the open platform's authorizer lists ---

// refreshField matches a refresh token in an answer.
var refreshField = regexp.MustCompile(`"(authorizer_refresh_token|refresh_token)"\s*:\s*"(?:[^"\\]|\\.)*"`)

// scrubRefreshTokens removes refresh tokens from api_get_authorizer_info
// and _list answers: the gateway holds them, no client needs them, and a
// client that used one would rotate it behind the gateway's back.
func scrubRefreshTokens(resp *http.Response) (*http.Response, error) {
	if resp.Header.Get("Content-Encoding") != "" {
		resp.Body.Close()
		return nil, errors.New("caddy-wechat: an encoded api_get_authorizer answer cannot be scrubbed")
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	b = refreshField.ReplaceAll(b, []byte(`"$1":""`))
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	return resp, nil
}

// --- rid/get ---

// isRidGet reports WeChat's "what was request R" API, which answers with
// the original query (access_token) and body (the stable_token secret).
func isRidGet(p string) bool {
	// Cleaning only drops segments, so a path that cleans to .../get holds
	// "/get" as it is: the usual call skips the Clean.
	if !containsFold(p, "/get") {
		return false
	}
	return strings.EqualFold(CanonicalPath(p), "/cgi-bin/openapi/rid/get")
}

// maxRidAnswer bounds what is decoded of a rid/get answer; a longer one is
// scrubbed as a stream, for known values only.
const maxRidAnswer = 1 << 20

// scrubRidGet decodes a rid/get answer and replaces every credential in
// request.request_url and request.request_body, whatever its value (an
// old secret, another account's token), keeping the rest so that rid/get
// still explains the request.
func scrubRidGet(resp *http.Response, ns *Needles) error {
	gz := strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip")
	var src io.Reader = resp.Body
	if gz {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return err
		}
		src = zr
	}
	data, err := io.ReadAll(io.LimitReader(src, maxRidAnswer+1))
	if err != nil {
		return err
	}
	if len(data) > maxRidAnswer {
		rest := resp.Body
		if gz {
			rest = struct {
				io.Reader
				io.Closer
			}{src, resp.Body}
		}
		resp.Body = &prefixBody{Reader: io.MultiReader(bytes.NewReader(data), rest), c: resp.Body}
		if gz {
			resp.Header.Del("Content-Encoding")
			resp.Uncompressed = true
		}
		streamScrub(resp, ns) // which drops the length
		return nil
	}
	resp.Body.Close()
	clean := ns.replaceBytes(redactRidAnswer(data))
	setBody(resp, clean, gz)
	return nil
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}
