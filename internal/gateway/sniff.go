package gateway

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// sniffLimit is how much of a response is read to look for a token error.
// WeChat's error bodies are about 100 bytes; anything longer than this is
// streamed through untouched.
const sniffLimit = 4 << 10

// isTokenErrcode reports the API-call errcodes that mean "this token is no
// good": invalid (40001), invalid (40014, WeCom's usual), expired (42001).
func isTokenErrcode(code int) bool {
	return code == 40001 || code == 40014 || code == 42001
}

// sniffable tells from the headers alone whether a response could be a
// small JSON error: WeChat sends those as HTTP 200 with a JSON or text/plain
// content type. Media downloads and anything big are left alone unread.
func sniffable(resp *http.Response) bool {
	if resp.StatusCode != http.StatusOK || resp.ContentLength > sniffLimit || resp.Body == nil || resp.Body == http.NoBody {
		return false
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "gzip") {
		return false
	}
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		return true
	}
	// A cut at ';' rather than mime.ParseMediaType: the parser was the
	// gateway's largest CPU cost under load (see BENCHMARKS.md).
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	if !strings.Contains(mt, "/") {
		return true // malformed: look anyway
	}
	return hasPrefixFold(mt, "text/") || (len(mt) >= 4 && strings.EqualFold(mt[len(mt)-4:], "json")) ||
		strings.EqualFold(mt, "application/javascript")
}

// sniff reads up to sniffLimit bytes of resp and returns the errcode of a
// small JSON body (0 for none). resp.Body is replaced by an equivalent body
// that replays what was read, so the client receives exactly what WeChat
// sent. Nothing past the limit is buffered. A small body that breaks off
// is an error: the gateway can still answer 502 instead of a truncated 200.
func sniff(resp *http.Response) (int, error) { return sniffInto(resp, nil) }

// sniffInto is sniff with the handle of the small body given: an unused
// sniffBody that lives as long as the response (send's), or nil for a
// new one.
func sniffInto(resp *http.Response, sb *sniffBody) (int, error) {
	if !sniffable(resp) {
		return 0, nil
	}
	buf := sniffPool.Get().(*sniffBuf)
	n, err := readUpTo(resp.Body, buf[:])
	if err == errMore {
		// More than the limit: hand back what we read followed by the
		// rest of the stream, unexamined.
		rest := resp.Body
		resp.Body = &prefixBody{Reader: io.MultiReader(bytes.NewReader(append([]byte(nil), buf[:n]...)), rest), c: rest}
		sniffPool.Put(buf)
		return 0, nil
	}
	if err != nil {
		resp.Body.Close()
		sniffPool.Put(buf)
		return 0, err
	}
	resp.Body.Close()
	if sb == nil {
		sb = new(sniffBody)
	}
	sb.buf = buf
	sb.r.Reset(buf[:n])
	resp.Body = sb
	data := buf[:n]
	if strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		data = gunzip(data)
	}
	return errcodeOf(data), nil
}

// errMore says the body is longer than the buffer.
var errMore = errors.New("more")

// readUpTo fills buf from r. It returns a nil error only for a body that
// ended cleanly within buf; errMore when there is more; else the read
// error, such as the io.ErrUnexpectedEOF of a body cut short, which
// io.ReadFull would confuse with a short clean body.
func readUpTo(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, errMore
}

// prefixBody is a body whose first bytes were read for sniffing.
type prefixBody struct {
	io.Reader
	c io.Closer
}

func (p *prefixBody) Close() error { return p.c.Close() }

// sniffBuf is the pooled buffer behind a small response, so the steady
// state reuses it rather than allocating 4 KiB per response.
type sniffBuf [sniffLimit + 1]byte

var sniffPool = sync.Pool{New: func() any { return new(sniffBuf) }}

// sniffBody is a small response's body. It owns its buffer until Close,
// which gives the buffer back and forgets it: a second Close finds nothing
// to give, so it can never hand a buffer another response now uses to the
// pool. The body itself is never pooled, which is what makes this hold.
type sniffBody struct {
	buf *sniffBuf
	r   bytes.Reader
}

// Read says io.EOF with the last bytes, as net/http's own bodies do, so
// that reverse_proxy's copy loop ends without another round (which costs
// it two allocations for its debug logger).
func (s *sniffBody) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == nil && s.r.Len() == 0 {
		err = io.EOF
	}
	return n, err
}

func (s *sniffBody) WriteTo(w io.Writer) (int64, error) { return s.r.WriteTo(w) }

// bytes is the whole body as read from upstream (empty after Close).
func (s *sniffBody) bytes() []byte {
	if s.buf == nil {
		return nil
	}
	return s.buf[:s.r.Size()]
}

func (s *sniffBody) Close() error {
	buf := s.buf
	if buf == nil {
		return nil
	}
	s.buf = nil
	s.r.Reset(nil)
	sniffPool.Put(buf)
	return nil
}

// gunzip inflates a small gzip body for inspection only; the client still
// gets the compressed bytes it asked for.
func gunzip(b []byte) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	out, err := io.ReadAll(io.LimitReader(zr, 16*sniffLimit))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return out
}

var errcodeKey = []byte(`"errcode"`)

// errcodeOf returns the top-level errcode of a JSON object, or 0. A quick
// scan handles the common answers; a token-error code found by the scan is
// confirmed by a real decode, so a nested "errcode" inside some string
// cannot trigger a replay.
func errcodeOf(b []byte) int {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 || b[0] != '{' {
		return 0
	}
	i := bytes.Index(b, errcodeKey)
	if i < 0 {
		return 0
	}
	rest := bytes.TrimLeft(b[i+len(errcodeKey):], " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return 0
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	if len(rest) > 0 && rest[0] == '-' {
		rest = rest[1:] // -1 (busy): the sign is kept by the decode below
	}
	code, digits := 0, 0
	for _, c := range rest {
		if c < '0' || c > '9' || digits > 9 {
			break
		}
		code = code*10 + int(c-'0')
		digits++
	}
	if digits == 0 || code == 0 {
		return 0
	}
	var top struct {
		Errcode json.Number `json:"errcode"`
	}
	if json.Unmarshal(b, &top) != nil {
		return 0
	}
	confirmed, err := strconv.Atoi(top.Errcode.String())
	if err != nil {
		return 0
	}
	return confirmed
}
