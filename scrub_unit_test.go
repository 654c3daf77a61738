package wechat

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// These tests pin scrub.go's pieces one by one (the ring of sent tokens,
// the needle set and its cache, the size boundaries of the answers it
// decodes), so that the mutation run (./mutate.sh) checks them without a
// server.

// The ring remembers the last four distinct tokens sent, once each; a nil
// ring or a nil token is a no-op, not a panic.
func TestTokenRingNote(t *testing.T) {
	var nilRing *tokenRing
	nilRing.note(&tokenEntry{Value: "token-zero-0000"})
	if got := nilRing.appendTo([]string{"kept"}); !slices.Equal(got, []string{"kept"}) {
		t.Fatalf("nil ring appendTo = %q", got)
	}

	r := new(tokenRing)
	r.note(nil)
	if got := r.appendTo(nil); len(got) != 0 || r.gen.Load() != 0 {
		t.Fatalf("a nil token was recorded: %q, gen %d", got, r.gen.Load())
	}
	tok := func(i int) *tokenEntry { return &tokenEntry{Value: strings.Repeat(string(rune('a'+i)), 12)} }
	e1 := tok(1)
	r.note(e1)
	if got := r.appendTo([]string{"x"}); !slices.Equal(got, []string{"x", e1.Value}) || r.gen.Load() != 1 {
		t.Fatalf("after one token: %q, gen %d", got, r.gen.Load())
	}
	r.note(e1)
	r.note(&tokenEntry{Value: e1.Value}) // the same token, another entry
	if got := r.appendTo(nil); len(got) != 1 || r.gen.Load() != 1 {
		t.Fatalf("the same token twice: %q, gen %d", got, r.gen.Load())
	}
	r.note(nil) // after a token: still a no-op
	var want []string
	for i := 2; i <= 5; i++ {
		e := tok(i)
		r.note(e)
		want = append(want, e.Value)
	}
	got := r.appendTo(nil)
	slices.Sort(got)
	if !slices.Equal(got, want) || r.gen.Load() != 5 {
		t.Fatalf("after five tokens: %q, gen %d; want the last four %q, gen 5", got, r.gen.Load(), want)
	}
	// The slot of the oldest is reused in turn: a sixth drops the second.
	r.note(tok(6))
	got = r.appendTo(nil)
	if slices.Contains(got, tok(2).Value) || !slices.Contains(got, tok(6).Value) || !slices.Contains(got, tok(3).Value) {
		t.Fatalf("after six tokens: %q", got)
	}
}

// A value shorter than minNeedle is no needle; one of exactly minNeedle
// is. Each value counts raw and in both escapes, once each, and min is the
// shortest needle whatever the order.
func TestNewNeedleSet(t *testing.T) {
	if ns := newNeedleSet(strings.Repeat("s", minNeedle-1)); len(ns.strs) != 0 || ns.min != 0 {
		t.Errorf("a %d-byte value: needles %q, min %d", minNeedle-1, ns.strs, ns.min)
	}
	exact := strings.Repeat("s", minNeedle)
	if ns := newNeedleSet(exact); !slices.Equal(ns.strs, []string{exact}) || ns.min != minNeedle || len(ns.bytes) != 1 {
		t.Errorf("a %d-byte value: needles %q, min %d", minNeedle, ns.strs, ns.min)
	}
	ns := newNeedleSet("abc def/ghi")
	if want := []string{"abc%20def%2Fghi", "abc+def%2Fghi", "abc def/ghi"}; !slices.Equal(ns.strs, want) { // longest first
		t.Errorf("escapes: %q, want %q", ns.strs, want)
	}
	long, short := strings.Repeat("l", 20), strings.Repeat("m", 9)
	for _, vals := range [][]string{{long, short}, {short, long}} {
		if ns := newNeedleSet(vals...); ns.min != 9 {
			t.Errorf("newNeedleSet(%d, %d bytes).min = %d, want 9", len(vals[0]), len(vals[1]), ns.min)
		}
	}
}

// A text exactly as long as the shortest needle can hold it; an empty set
// finds nothing, even in an empty text.
func TestNeedleSetFindsAtExactLength(t *testing.T) {
	n := strings.Repeat("k", 10)
	ns := newNeedleSet(n)
	if !ns.inString(n) || !ns.inBytes([]byte(n)) {
		t.Errorf("a text that is the needle: not found")
	}
	if ns.inString(n[1:]) || ns.inBytes([]byte(n[1:])) || ns.inString("x"+n[1:]) {
		t.Errorf("a text one byte short of the needle: found")
	}
	if !ns.inString("..." + n + "...") {
		t.Errorf("a needle inside a text: not found")
	}
	empty := newNeedleSet()
	if empty.inString("") || empty.inBytes(nil) || empty.inString("anything at all") {
		t.Errorf("an empty needle set found something")
	}
	b := []byte("a " + n + " b " + n)
	if got := string(ns.replaceBytes(b)); got != "a "+redactedMark+" b "+redactedMark {
		t.Errorf("replaceBytes = %q", got)
	}
}

// needles is cached until the current token or the ring changes, and the
// set includes the secret and every token the ring sent.
func TestNeedlesCache(t *testing.T) {
	const secret = "secret-secret-secret"
	tr := &Transport{secret: secret, sent: new(tokenRing), needleCache: new(atomic.Pointer[needleSet])}
	a := tr.needles("")
	if !slices.Contains(a.strs, secret) {
		t.Fatalf("needles %q miss the secret", a.strs)
	}
	if b := tr.needles(""); b != a {
		t.Errorf("unchanged ring: needles rebuilt")
	}
	e := &tokenEntry{Value: "sent-token-sent-token"}
	tr.sent.note(e)
	c := tr.needles("")
	if c == a || !slices.Contains(c.strs, e.Value) || !slices.Contains(c.strs, secret) {
		t.Errorf("after a token was sent: same set %v, needles %q", c == a, c.strs)
	}
	if d := tr.needles(""); d != c {
		t.Errorf("unchanged again: needles rebuilt")
	}
	// Without a cache, a fresh set each time, still complete.
	bare := &Transport{secret: secret}
	if x, y := bare.needles(""), bare.needles(""); x == y || !slices.Contains(x.strs, secret) {
		t.Errorf("no cache: same set %v, needles %q", x == y, x.strs)
	}
}

// A small gzip answer that inflates to the inspection limit or more is
// scrubbed as a whole stream: a needle past what gunzip looks at is
// redacted too, and the answer is not cut.
func TestScrubSniffedGzipAtInflateLimit(t *testing.T) {
	ns := newNeedleSet(scrubTok)
	for _, pad := range []int{16*sniffLimit - len(scrubTok), 16 * sniffLimit, 16*sniffLimit - len(scrubTok) - 1} {
		plain := strings.Repeat("a", pad) + scrubTok
		z := gz([]byte(plain))
		if len(z) > sniffLimit {
			t.Fatalf("test body does not compress below the sniff limit: %d", len(z))
		}
		resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}},
			Body: io.NopCloser(bytes.NewReader(z)), ContentLength: int64(len(z))}
		req, _ := http.NewRequest(http.MethodGet, "http://gw/cgi-bin/user/info", nil)
		if err := scrubAnswer(canonicalPath(req.URL.Path), resp, ns); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("Content-Encoding") != "" {
			got = gunzipAll(t, got)
		}
		if want := strings.Repeat("a", pad) + redactedMark; string(got) != want {
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
	ns := newNeedleSet(scrubTok)
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
		if err := scrubAnswer(canonicalPath(req.URL.Path), resp, ns); err != nil {
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
	if err := scrubAnswer(canonicalPath(req.URL.Path), resp, ns); err == nil {
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
	ns := newNeedleSet("abcdefghij", "abcdefghijKLMN")
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
	ns := newNeedleSet(scrubTok)
	body := []byte(strings.Repeat("z", 8<<10) + scrubTok)
	for _, ce := range []string{"br", "deflate", "zstd", "compress"} {
		for _, ct := range []string{"text/plain", "application/json", "image/jpeg"} {
			for _, p := range []string{"/cgi-bin/user/info", "/cgi-bin/openapi/rid/get"} {
				for _, b := range [][]byte{body, []byte(`{"errcode":0}`)} {
					resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {ct}, "Content-Encoding": {ce}},
						Body: io.NopCloser(bytes.NewReader(b)), ContentLength: int64(len(b))}
					if err := scrubAnswer(p, resp, ns); err != errUnreadableEncoding {
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
	if err := scrubAnswer(canonicalPath(req.URL.Path), resp, ns); err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(resp.Body); bytes.Contains(got, []byte(scrubTok)) {
		t.Errorf("Content-Encoding identity: the token leaked")
	}
}

// A small gzip answer without a needle passes on as WeChat sent it, still
// compressed, byte for byte: the scrub rewrites only on a hit.
func TestScrubSniffedGzipNoHitUntouched(t *testing.T) {
	ns := newNeedleSet(scrubTok)
	z := gz([]byte(`{"errcode":0,"errmsg":"ok","openid":"o1"}`))
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}, "Content-Length": {"x"}},
		Body: io.NopCloser(bytes.NewReader(z)), ContentLength: int64(len(z))}
	req, _ := http.NewRequest(http.MethodGet, "http://gw/cgi-bin/user/info", nil)
	if err := scrubAnswer(canonicalPath(req.URL.Path), resp, ns); err != nil {
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
		ns := newNeedleSet(vals...)
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
	ns := newNeedleSet("SECRET-0123456789", "TOKEN-abcdef")
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
