package gateway

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// These tests pin scrub.go's pieces one by one (the ring of sent tokens,
// the needle set and its cache, the size boundaries of the answers it
// decodes), so that the mutation run (./mutate.sh) checks them without a
// server.

// The ring remembers the last four distinct tokens sent, once each; a nil
// ring or a nil token is a no-op, not a panic.
func TestTokenRingNote(t *testing.T) {
	var nilRing *TokenRing
	nilRing.Note(&credential.Token{Value: "token-zero-0000"})
	if got := nilRing.AppendTo([]string{"kept"}); !slices.Equal(got, []string{"kept"}) {
		t.Fatalf("nil ring appendTo = %q", got)
	}

	r := new(TokenRing)
	r.Note(nil)
	if got := r.AppendTo(nil); len(got) != 0 || r.gen.Load() != 0 {
		t.Fatalf("a nil token was recorded: %q, gen %d", got, r.gen.Load())
	}
	tok := func(i int) *credential.Token {
		return &credential.Token{Value: strings.Repeat(string(rune('a'+i)), 12)}
	}
	e1 := tok(1)
	r.Note(e1)
	if got := r.AppendTo([]string{"x"}); !slices.Equal(got, []string{"x", e1.Value}) || r.gen.Load() != 1 {
		t.Fatalf("after one token: %q, gen %d", got, r.gen.Load())
	}
	r.Note(e1)
	r.Note(&credential.Token{Value: e1.Value}) // the same token, another entry
	if got := r.AppendTo(nil); len(got) != 1 || r.gen.Load() != 1 {
		t.Fatalf("the same token twice: %q, gen %d", got, r.gen.Load())
	}
	r.Note(nil) // after a token: still a no-op
	var want []string
	for i := 2; i <= 5; i++ {
		e := tok(i)
		r.Note(e)
		want = append(want, e.Value)
	}
	got := r.AppendTo(nil)
	slices.Sort(got)
	if !slices.Equal(got, want) || r.gen.Load() != 5 {
		t.Fatalf("after five tokens: %q, gen %d; want the last four %q, gen 5", got, r.gen.Load(), want)
	}
	// The slot of the oldest is reused in turn: a sixth drops the second.
	r.Note(tok(6))
	got = r.AppendTo(nil)
	if slices.Contains(got, tok(2).Value) || !slices.Contains(got, tok(6).Value) || !slices.Contains(got, tok(3).Value) {
		t.Fatalf("after six tokens: %q", got)
	}
}

// A value shorter than minNeedle is no needle; one of exactly minNeedle
// is. Each value counts raw and in both escapes, once each, and min is the
// shortest needle whatever the order.
func TestNewNeedleSet(t *testing.T) {
	if ns := NewNeedles(NeedleKey{}, nil, strings.Repeat("s", MinNeedle-1)); len(ns.strs) != 0 || ns.min != 0 {
		t.Errorf("a %d-byte value: needles %q, min %d", MinNeedle-1, ns.strs, ns.min)
	}
	exact := strings.Repeat("s", MinNeedle)
	if ns := NewNeedles(NeedleKey{}, nil, exact); !slices.Equal(ns.strs, []string{exact}) || ns.min != MinNeedle || len(ns.bytes) != 1 {
		t.Errorf("a %d-byte value: needles %q, min %d", MinNeedle, ns.strs, ns.min)
	}
	ns := NewNeedles(NeedleKey{}, nil, "abc def/ghi")
	if want := []string{"abc%20def%2Fghi", "abc+def%2Fghi", "abc def/ghi"}; !slices.Equal(ns.strs, want) { // longest first
		t.Errorf("escapes: %q, want %q", ns.strs, want)
	}
	long, short := strings.Repeat("l", 20), strings.Repeat("m", 9)
	for _, vals := range [][]string{{long, short}, {short, long}} {
		if ns := NewNeedles(NeedleKey{}, nil, vals...); ns.min != 9 {
			t.Errorf("newNeedleSet(%d, %d bytes).min = %d, want 9", len(vals[0]), len(vals[1]), ns.min)
		}
	}
}

// A text exactly as long as the shortest needle can hold it; an empty set
// finds nothing, even in an empty text.
func TestNeedleSetFindsAtExactLength(t *testing.T) {
	n := strings.Repeat("k", 10)
	ns := NewNeedles(NeedleKey{}, nil, n)
	if !ns.inString(n) || !ns.inBytes([]byte(n)) {
		t.Errorf("a text that is the needle: not found")
	}
	if ns.inString(n[1:]) || ns.inBytes([]byte(n[1:])) || ns.inString("x"+n[1:]) {
		t.Errorf("a text one byte short of the needle: found")
	}
	if !ns.inString("..." + n + "...") {
		t.Errorf("a needle inside a text: not found")
	}
	empty := NewNeedles(NeedleKey{}, nil)
	if empty.inString("") || empty.inBytes(nil) || empty.inString("anything at all") {
		t.Errorf("an empty needle set found something")
	}
	b := []byte("a " + n + " b " + n)
	if got := string(ns.replaceBytes(b)); got != "a "+RedactedMark+" b "+RedactedMark {
		t.Errorf("replaceBytes = %q", got)
	}
}

// A small gzip answer that inflates to the inspection limit or more is
// scrubbed as a whole stream: a needle past what gunzip looks at is
// redacted too, and the answer is not cut.
func TestScrubSniffedGzipAtInflateLimit(t *testing.T) {
	ns := NewNeedles(NeedleKey{}, nil, scrubTok)
	for _, pad := range []int{16*sniffLimit - len(scrubTok), 16 * sniffLimit, 16*sniffLimit - len(scrubTok) - 1} {
		plain := strings.Repeat("a", pad) + scrubTok
		z := gz([]byte(plain))
		if len(z) > sniffLimit {
			t.Fatalf("test body does not compress below the sniff limit: %d", len(z))
		}
		resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}},
			Body: io.NopCloser(bytes.NewReader(z)), ContentLength: int64(len(z))}
		req, _ := http.NewRequest(http.MethodGet, "http://gw/cgi-bin/user/info", nil)
		if err := Scrub(CanonicalPath(req.URL.Path), resp, ns); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("Content-Encoding") != "" {
			got = gunzipAll(t, got)
		}
		if want := strings.Repeat("a", pad) + RedactedMark; string(got) != want {
			t.Errorf("%d-byte answer: got %d bytes (leaks %v), want %d", len(plain), len(got), leaks(string(got)), len(want))
		}
	}
}

// A rid/get answer of exactly maxRidAnswer bytes is still decoded, so a
// credential the gateway never held (another account's token) is redacted
// by field; one byte more is scrubbed as a stream, for known values only.
// Gzip answers are inflated for this either way, and sent plain.
func TestScrubRidGetAtSizeLimit(t *testing.T) {
	const other = "SomeoneElsesTokenNotOursAtAll"
	ns := NewNeedles(NeedleKey{}, nil, scrubTok)
	mk := func(size int) []byte {
		head := `{"errcode":0,"request":{"request_url":"access_token=` + other + `","response_body":"`
		tail := `"}}`
		return []byte(head + strings.Repeat("p", size-len(head)-len(tail)) + tail)
	}
	for _, tc := range []struct {
		size    int
		decoded bool
		gzip    bool
	}{{maxRidAnswer, true, false}, {maxRidAnswer + 1, false, false}, {maxRidAnswer, true, true}, {maxRidAnswer + 1, false, true}} {
		plain := mk(tc.size)
		body, h := plain, http.Header{"Content-Type": {"application/json"}}
		if tc.gzip {
			body = gz(plain)
			h.Set("Content-Encoding", "gzip")
		}
		resp := &http.Response{StatusCode: 200, Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body))}
		req, _ := http.NewRequest(http.MethodGet, "http://gw/cgi-bin/openapi/rid/get", nil)
		if err := Scrub(CanonicalPath(req.URL.Path), resp, ns); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("Content-Encoding") != "" {
			t.Fatalf("%d-byte rid/get answer (gzip %v): still encoded", tc.size, tc.gzip)
		}
		if decoded := !bytes.Contains(got, []byte(other)); decoded != tc.decoded {
			t.Errorf("%d-byte rid/get answer (gzip %v): decoded %v, want %v", tc.size, tc.gzip, decoded, tc.decoded)
		}
		if !tc.decoded && !bytes.Equal(got, plain) {
			t.Errorf("%d-byte rid/get answer (gzip %v) streamed changed (%d bytes)", tc.size, tc.gzip, len(got))
		}
		if tc.decoded && !bytes.Contains(got, []byte(`"response_body"`)) {
			t.Errorf("%d-byte rid/get answer (gzip %v): decoded into %.100s", tc.size, tc.gzip, got)
		}
		if (tc.decoded || resp.ContentLength >= 0) && resp.ContentLength != int64(len(got)) {
			t.Errorf("%d-byte rid/get answer (gzip %v): ContentLength %d, body %d", tc.size, tc.gzip, resp.ContentLength, len(got))
		}
	}
	// A rid/get answer claiming gzip that is not: an error, not a pass.
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Encoding": {"gzip"}}, Body: io.NopCloser(strings.NewReader(`{"request":{}}`))}
	req, _ := http.NewRequest(http.MethodGet, "http://gw/cgi-bin/openapi/rid/get", nil)
	if err := Scrub(CanonicalPath(req.URL.Path), resp, ns); err == nil {
		t.Errorf("a broken gzip rid/get answer passed")
	}
}

// containsFold looks at every position, the last one included.
func TestContainsFold(t *testing.T) {
	for _, tc := range []struct {
		s, sub string
		want   bool
	}{
		{"/x/GET", "/get", true}, {"/GET", "/get", true}, {"/GE", "/get", false}, {"/gEt/x", "/get", true}, {"", "", true}, {"/ge/t", "/get", false},
	} {
		if got := containsFold(tc.s, tc.sub); got != tc.want {
			t.Errorf("containsFold(%q, %q) = %v", tc.s, tc.sub, got)
		}
	}
}

// The stream scrub reads into a real buffer (never an empty one, which
// would make no progress), and where two needles start at the same byte
// it agrees with the whole-body replace: the earlier needle of the set
// wins.
func TestScrubReaderStrictBody(t *testing.T) {
	ns := NewNeedles(NeedleKey{}, nil, "abcdefghij", "abcdefghijKLMN")
	in := strings.Repeat("x", 40<<10) + " abcdefghijKLMN " + strings.Repeat("y", 40<<10) + "abcdefghij"
	sr := &scrubReader{ns: ns, src: &stepBody{data: []byte(in), step: 5000}, c: io.NopCloser(nil)}
	got, err := io.ReadAll(sr)
	if err != nil {
		t.Fatal(err)
	}
	if want := ns.replaceString(in); string(got) != want {
		t.Fatalf("stream scrub differs from the whole-body replace (%d vs %d bytes)", len(got), len(want))
	}
}

// An answer in an encoding the gateway cannot read is refused, small or
// large, rid/get or not, text or media: passed on unread it could carry
// a token (the open platform's rid/get did, with Accept-Encoding: deflate).
func TestStreamScrubUnknownEncoding(t *testing.T) {
	ns := NewNeedles(NeedleKey{}, nil, scrubTok)
	body := []byte(strings.Repeat("z", 8<<10) + scrubTok)
	for _, ce := range []string{"br", "deflate", "zstd", "compress"} {
		for _, ct := range []string{"text/plain", "application/json", "image/jpeg"} {
			for _, p := range []string{"/cgi-bin/user/info", "/cgi-bin/openapi/rid/get"} {
				for _, b := range [][]byte{body, []byte(`{"errcode":0}`)} {
					resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {ct}, "Content-Encoding": {ce}},
						Body: io.NopCloser(bytes.NewReader(b)), ContentLength: int64(len(b))}
					if err := Scrub(p, resp, ns); err != errUnreadableEncoding {
						t.Errorf("Content-Encoding %s, %s, %s, %d bytes: err %v, want the refusal", ce, ct, p, len(b), err)
					}
				}
			}
		}
	}
	// identity is no encoding at all: scrubbed.
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/plain"}, "Content-Encoding": {"identity"}},
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body))}
	req, _ := http.NewRequest(http.MethodGet, "http://gw/cgi-bin/user/info", nil)
	if err := Scrub(CanonicalPath(req.URL.Path), resp, ns); err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(resp.Body); bytes.Contains(got, []byte(scrubTok)) {
		t.Errorf("Content-Encoding identity: the token leaked")
	}
}

// A small gzip answer without a needle passes on as WeChat sent it, still
// compressed, byte for byte: the scrub rewrites only on a hit.
func TestScrubSniffedGzipNoHitUntouched(t *testing.T) {
	ns := NewNeedles(NeedleKey{}, nil, scrubTok)
	z := gz([]byte(`{"errcode":0,"errmsg":"ok","openid":"o1"}`))
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}, "Content-Length": {"x"}},
		Body: io.NopCloser(bytes.NewReader(z)), ContentLength: int64(len(z))}
	req, _ := http.NewRequest(http.MethodGet, "http://gw/cgi-bin/user/info", nil)
	if err := Scrub(CanonicalPath(req.URL.Path), resp, ns); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	if !bytes.Equal(got, z) || resp.Header.Get("Content-Encoding") != "gzip" || resp.ContentLength != int64(len(z)) || resp.Uncompressed {
		t.Fatalf("a clean gzip answer changed: %d bytes (want %d), encoding %q, length %d", len(got), len(z), resp.Header.Get("Content-Encoding"), resp.ContentLength)
	}
}

// A value that is a prefix of another (a token sharing the secret's first
// bytes) must not win at a position both match: the longer one is
// redacted whole, in the whole-body replace and in the stream scrub,
// whatever order the values come in.
func TestScrubLongerNeedleWins(t *testing.T) {
	for _, vals := range [][]string{{"abcdefghij", "abcdefghijKLMN"}, {"abcdefghijKLMN", "abcdefghij"}} {
		ns := NewNeedles(NeedleKey{}, nil, vals...)
		in := "x abcdefghijKLMN y " + strings.Repeat("z", 40<<10) + " abcdefghijKLMN"
		if got := ns.replaceString(in); strings.Contains(got, "KLMN") {
			t.Fatalf("%q: whole-body replace left the longer value's tail", vals)
		}
		if got := ns.replaceBytes([]byte(in)); bytes.Contains(got, []byte("KLMN")) {
			t.Fatalf("%q: byte replace left the longer value's tail", vals)
		}
		sr := &scrubReader{ns: ns, src: &stepBody{data: []byte(in), step: 5000}, c: io.NopCloser(nil)}
		got, err := io.ReadAll(sr)
		if err != nil || bytes.Contains(got, []byte("KLMN")) {
			t.Fatalf("%q: stream scrub left the longer value's tail (%v)", vals, err)
		}
	}
}

// The stream scrub takes the first match in the text, whichever needle
// it is: a needle right at the start of what is left (just after the
// previous match, or at the start of the body) is redacted even when a
// needle later in the set matches further on. Taking the later match
// instead would copy the first one out in clear.
func TestStreamScrubFirstMatchAtStart(t *testing.T) {
	ns := NewNeedles(NeedleKey{}, nil, "SECRET-0123456789", "TOKEN-abcdef")
	for _, in := range []string{
		"SECRET-0123456789 then TOKEN-abcdef",
		"TOKEN-abcdefSECRET-0123456789 and TOKEN-abcdef",
		"x TOKEN-abcdefSECRET-0123456789 y TOKEN-abcdef z",
	} {
		sr := &scrubReader{ns: ns, src: &stepBody{data: []byte(in), step: 5000}, c: io.NopCloser(nil)}
		got, err := io.ReadAll(sr)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(got, []byte("SECRET-")) || bytes.Contains(got, []byte("TOKEN-")) {
			t.Fatalf("stream scrub of %q left a value in clear: %q", in, got)
		}
		if want := ns.replaceString(in); string(got) != want {
			t.Fatalf("stream scrub of %q = %q; the whole-body replace gives %q", in, got, want)
		}
	}
}

const (
	scrubTok  = "95_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcdefghijklmnopQRSTUVWXYZ"
	scrubOld  = "94_oldtokenoldtokenoldtokenoldtokenoldtokenoldtokenoldtoken0123456"
	scrubSecr = "0123456789abcdef0123456789abcdef"
)

// scrubNeedles are a secret and two tokens to scrub, as a host builds them.
func scrubNeedles() *Needles { return NewNeedles(NeedleKey{}, nil, scrubTok, scrubOld, scrubSecr) }

func leaks(s string) []string {
	var out []string
	for _, n := range []string{scrubTok, scrubOld, scrubSecr} {
		if strings.Contains(s, n) {
			out = append(out, n[:6]+"...")
		}
	}
	return out
}

// chunky reads in random small pieces, so needles straddle every boundary.
type chunky struct {
	r   io.Reader
	rng *rand.Rand
}

func (c *chunky) Read(p []byte) (int, error) {
	n := 1 + c.rng.IntN(7)
	if n > len(p) {
		n = len(p)
	}
	return c.r.Read(p[:n])
}

func TestScrubReaderAcrossChunks(t *testing.T) {
	ns := scrubNeedles()
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 1))
		var in strings.Builder
		for in.Len() < 64<<10 {
			switch rng.IntN(4) {
			case 0:
				in.WriteString(scrubTok)
			case 1:
				in.WriteString(url.QueryEscape(scrubSecr))
			case 2:
				in.WriteString(scrubOld[:rng.IntN(len(scrubOld))]) // a prefix is no match
			default:
				in.WriteString(strings.Repeat("x", rng.IntN(100)))
			}
		}
		want := ns.replaceString(in.String())
		sr := &scrubReader{ns: ns, src: &chunky{strings.NewReader(in.String()), rng}, c: io.NopCloser(nil)}
		got, err := io.ReadAll(sr)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Fatalf("seed %d: stream scrub differs from a whole-body replace", seed)
		}
		if l := leaks(string(got)); l != nil {
			t.Fatalf("seed %d: leaked %v", seed, l)
		}
	}
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// Every kind of answer the gateway passes on, with a credential in its body
// and in its headers: none reaches the client, and media is untouched.
func TestScrubResponse(t *testing.T) {
	small := []byte(`{"errcode":40003,"errmsg":"invalid openid, access_token=` + scrubTok + ` secret ` + scrubSecr + ` rid: x"}`)
	large := []byte(strings.Repeat("a", 8<<10) + scrubOld + strings.Repeat("b", 100<<10) + url.QueryEscape(scrubSecr))
	media := append([]byte("\xff\xd8\xff"), []byte(scrubTok)...)
	for _, tc := range []struct {
		name, ct, ce string
		status       int
		body         []byte
		wantPlain    bool // the body must come back unchanged
	}{
		{"small json", "application/json", "", 200, small, false},
		{"small text/plain", "text/plain", "", 200, small, false},
		{"small gzip", "application/json", "gzip", 200, gz(small), false},
		{"large json", "application/json", "", 200, large, false},
		{"large gzip", "text/plain", "gzip", 200, gz(large), false},
		{"html error page", "text/html", "", 502, small, false},
		{"no content type", "", "", 200, large, false},
		{"media", "image/jpeg", "", 200, media, true},
		{"small gzip inflating large", "text/plain", "gzip", 200, gz(large), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{"Content-Type": {tc.ct}, "Location": {"https://x/?access_token=" + scrubTok}, "X-Echo": {scrubSecr, "ok"}}
			if tc.ce != "" {
				h.Set("Content-Encoding", tc.ce)
			}
			resp := &http.Response{StatusCode: tc.status, Header: h, Body: io.NopCloser(bytes.NewReader(tc.body)), ContentLength: int64(len(tc.body))}
			req, _ := http.NewRequest("GET", "http://gw/cgi-bin/user/info", nil)
			if err := Scrub(CanonicalPath(req.URL.Path), resp, scrubNeedles()); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantPlain {
				if !bytes.Equal(got, tc.body) {
					t.Errorf("media body changed")
				}
			} else {
				if resp.Header.Get("Content-Encoding") != "" {
					got = gunzipAll(t, got)
				}
				if l := leaks(string(got)); l != nil {
					t.Errorf("body leaks %v", l)
				}
				if !bytes.Contains(got, []byte(RedactedMark)) {
					t.Errorf("body has no marker: %.200s", got)
				}
				if resp.ContentLength >= 0 && resp.ContentLength != int64(len(got)) {
					t.Errorf("ContentLength %d, body %d", resp.ContentLength, len(got))
				}
			}
			for k, vs := range resp.Header {
				if l := leaks(strings.Join(vs, " ")); l != nil {
					t.Errorf("header %s leaks %v", k, l)
				}
			}
			if resp.Header.Values("X-Echo")[1] != "ok" {
				t.Errorf("a clean header value changed: %v", resp.Header.Values("X-Echo"))
			}
		})
	}
}

func gunzipAll(t *testing.T, b []byte) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(zr)
	return out
}

func TestIsRidGet(t *testing.T) {
	for p, want := range map[string]bool{
		"/cgi-bin/openapi/rid/get": true, "/CGI-BIN/OpenAPI/RID/GET/": true, "/x/../cgi-bin/openapi/rid//get": true,
		"/cgi-bin/openapi/rid/get/..": false, "/cgi-bin/openapi/rid/get/.": true, "/cgi-bin/openapi/rid/GET/x/..": true, "/cgi-bin/user/get": false, "/cgi-bin/user/info": false, "": false,
	} {
		if got := isRidGet(p); got != want {
			t.Errorf("isRidGet(%q) = %v", p, got)
		}
	}
}

// The scrub counts what it had to remove, by part; a clean answer and
// rid/get's by-design field redaction count nothing.
func TestScrubRedactionsCounted(t *testing.T) {
	header, body := prometheus.NewCounter(prometheus.CounterOpts{Name: "h"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "b"})
	hits := &Hits{Header: header, Body: body}
	count := func() (h, b float64) { return testutil.ToFloat64(header), testutil.ToFloat64(body) }
	rid, _ := json.Marshal(map[string]any{"errcode": 0, "request": map[string]any{
		"invoke_time": 1, "request_url": "access_token=" + scrubTok + "&openid=o1", "request_body": "", "response_body": "{}"}})
	for _, tc := range []struct {
		name          string
		path, ct      string
		hdr           string
		body          []byte
		header, bodyN float64
	}{
		{"clean", "/cgi-bin/user/info", "application/json", "ok", []byte(`{"errcode":0}`), 0, 0},
		{"rid/get by design", "/cgi-bin/openapi/rid/get", "application/json", "ok", rid, 0, 0},
		{"header echo", "/cgi-bin/user/info", "application/json", "https://x/?access_token=" + scrubTok, []byte(`{"errcode":0}`), 1, 0},
		{"small body echo", "/cgi-bin/user/info", "application/json", "ok", []byte(`{"errmsg":"` + scrubSecr + `"}`), 0, 1},
		{"streamed body echo", "/cgi-bin/user/info", "text/plain", "ok", []byte(strings.Repeat("a", 200<<10) + scrubOld), 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h0, b0 := count()
			resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {tc.ct}, "Location": {tc.hdr}},
				Body: io.NopCloser(bytes.NewReader(tc.body)), ContentLength: int64(len(tc.body))}
			req, _ := http.NewRequest("GET", "http://gw"+tc.path, nil)
			if err := Scrub(CanonicalPath(req.URL.Path), resp, NewNeedles(NeedleKey{}, hits, scrubTok, scrubOld, scrubSecr)); err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			if l := leaks(string(got) + resp.Header.Get("Location")); l != nil {
				t.Fatalf("leaks %v", l)
			}
			h1, b1 := count()
			if h1-h0 != tc.header || b1-b0 != tc.bodyN {
				t.Errorf("redactions counted: header +%v body +%v, want +%v +%v", h1-h0, b1-b0, tc.header, tc.bodyN)
			}
		})
	}
}

// A value that is exactly the shortest needle is found: a header holding
// the token and nothing else.
func TestNeedleOfExactLength(t *testing.T) {
	ns := NewNeedles(NeedleKey{}, nil, "abcdefghij", "abcdefghijKLMNOPQRST")
	if !ns.inString("abcdefghij") || !ns.inBytes([]byte("abcdefghij")) {
		t.Error("a value equal to the shortest needle was not found")
	}
	h := http.Header{"X-Token": {"abcdefghij"}}
	ns.scrubHeader(h)
	if h.Get("X-Token") != RedactedMark {
		t.Errorf("header %q, want it redacted", h.Get("X-Token"))
	}
}
