package gateway

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// These tests pin sniff.go at its exact boundaries (the sniff limit, the
// buffer's last byte, the errcode scan), so that the mutation run
// (./mutate.sh) checks them without a server.

// Exactly the three token errcodes replay; their neighbours do not.
func TestIsTokenErrcode(t *testing.T) {
	for code, want := range map[int]bool{40001: true, 40014: true, 42001: true, 0: false, -1: false, 40000: false, 40002: false, 40013: false, 40015: false, 42000: false, 42002: false} {
		if got := isTokenErrcode(code); got != want {
			t.Errorf("isTokenErrcode(%d) = %v", code, got)
		}
	}
}

// errcodeOf reads codes that begin with a 9 or a 1, that end in 0, and
// negative ones.
func TestErrcodeOfDigits(t *testing.T) {
	for body, want := range map[string]int{
		`{"errcode":9001001,"errmsg":"x"}`: 9001001,
		`{"errcode":10}`:                   10,
		`{"errcode":40000}`:                40000,
		`{"errcode":-1}`:                   -1,
		`{"errcode":-40001}`:               -40001,
		`{"errcode":9}`:                    9,
		`{"errcode":0}`:                    0,
		`{"errcode":`:                      0,
		`{"errcode":-`:                     0,
	} {
		if got := errcodeOf([]byte(body)); got != want {
			t.Errorf("errcodeOf(%s) = %d, want %d", body, got, want)
		}
	}
}

// padded is a JSON token error of exactly n bytes.
func padded(n int) []byte {
	head, tail := `{"errcode":40001,"errmsg":"`, `"}`
	return []byte(head + strings.Repeat("p", n-len(head)-len(tail)) + tail)
}

// A body announced at exactly sniffLimit bytes is sniffed; one byte more
// is not read at all. Of unknown length, a body of exactly sniffLimit
// bytes is sniffed, and one of sniffLimit+1 streams after one buffer
// without a Read that could not make progress.
func TestSniffAtLimit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		size     int
		length   int64
		wantCode int
		maxRead  int
	}{
		{"announced at the limit", sniffLimit, sniffLimit, 40001, sniffLimit},
		{"announced one over", sniffLimit + 1, sniffLimit + 1, 0, 0},
		{"unknown, at the limit", sniffLimit, -1, 40001, sniffLimit},
		{"unknown, one over", sniffLimit + 1, -1, 0, sniffLimit + 1},
		{"unknown, two over", sniffLimit + 2, -1, 0, sniffLimit + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := padded(tc.size)
			body := &stepBody{data: bytes.Clone(data), step: 1000}
			resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, ContentLength: tc.length, Body: body}
			code, err := sniff(resp)
			if err != nil || code != tc.wantCode {
				t.Fatalf("sniff = %d, %v; want %d", code, err, tc.wantCode)
			}
			if read := tc.size - len(body.data); read > tc.maxRead {
				t.Errorf("sniff read %d bytes, want at most %d", read, tc.maxRead)
			}
			got, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("the client got %d bytes (%v), want the %d sent", len(got), err, len(data))
			}
		})
	}
}

// A sniffed body gives io.EOF with its last bytes, in one read or many,
// and nothing after Close.
func TestSniffBodyRead(t *testing.T) {
	const s = `{"errcode":0,"errmsg":"ok"}`
	mk := func() *http.Response {
		resp := &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: int64(len(s)), Body: io.NopCloser(strings.NewReader(s))}
		if _, err := sniff(resp); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := mk()
	p := make([]byte, 100)
	if n, err := resp.Body.Read(p); n != len(s) || err != io.EOF || string(p[:n]) != s {
		t.Fatalf("one read: %d, %v; want %d bytes with io.EOF", n, err, len(s))
	}
	resp = mk()
	var got []byte
	for {
		n, err := resp.Body.Read(p[:1])
		got = append(got, p[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil || n != 1 {
			t.Fatalf("byte %d: %d, %v", len(got), n, err)
		}
	}
	if string(got) != s {
		t.Fatalf("byte by byte: %q", got)
	}
	resp = mk()
	sb, ok := resp.Body.(*sniffBody)
	if !ok {
		t.Fatalf("a small JSON answer is not a sniffBody: %T", resp.Body)
	}
	if !bytes.Equal(sb.bytes(), []byte(s)) {
		t.Fatalf("bytes() = %q", sb.bytes())
	}
	sb.Close()
	if b := sb.bytes(); b != nil {
		t.Fatalf("bytes() after Close = %q, want nil", b)
	}
	if n, err := sb.Read(p); n != 0 || err != io.EOF {
		t.Fatalf("Read after Close: %d, %v", n, err)
	}
	sb.Close() // a second Close is harmless
}

// sniffable: only 200s, only text and JSON, only gzip or no encoding.
func TestSniffable(t *testing.T) {
	for _, tc := range []struct {
		status int
		ct, ce string
		length int64
		want   bool
	}{
		{200, "application/json", "", 10, true},
		{200, "application/json; charset=utf-8", "", sniffLimit, true},
		{200, "application/json", "", sniffLimit + 1, false},
		{200, "application/json", "", -1, true},
		{201, "application/json", "", 10, false},
		{200, "application/json", "gzip", 10, true},
		{200, "application/json", "GZIP", 10, true},
		{200, "application/json", "br", 10, false},
		{200, "", "", 10, true},
		{200, "nonsense", "", 10, true},
		{200, "text/plain", "", 10, true},
		{200, "TEXT/html", "", 10, true},
		{200, "application/problem+json", "", 10, true},
		{200, "application/javascript", "", 10, true},
		{200, "a/b", "", 10, false},
		{200, "image/jpeg", "", 10, false},
		{200, "application/octet-stream", "", 10, false},
	} {
		h := http.Header{}
		if tc.ct != "" {
			h.Set("Content-Type", tc.ct)
		}
		if tc.ce != "" {
			h.Set("Content-Encoding", tc.ce)
		}
		resp := &http.Response{StatusCode: tc.status, Header: h, ContentLength: tc.length, Body: io.NopCloser(strings.NewReader("{}"))}
		if got := sniffable(resp); got != tc.want {
			t.Errorf("sniffable(%d, %q, %q, %d) = %v", tc.status, tc.ct, tc.ce, tc.length, got)
		}
	}
	for _, body := range []io.ReadCloser{nil, http.NoBody} {
		if sniffable(&http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1, Body: body}) {
			t.Errorf("sniffable with body %v", body)
		}
	}
}

// A small body that breaks off is an error (the gateway answers 502
// rather than pass a cut 200 on).
func TestSniffBrokenBody(t *testing.T) {
	boom := errors.New("reset")
	resp := &http.Response{StatusCode: 200, Header: http.Header{}, ContentLength: -1,
		Body: io.NopCloser(io.MultiReader(strings.NewReader(`{"errcode":400`), iotestErr{boom}))}
	if _, err := sniff(resp); err != boom {
		t.Fatalf("sniff = %v, want the read error", err)
	}
}

// countingBody counts what sniff reads before the client does.
type countingBody struct {
	r    io.Reader
	read int
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}
func (c *countingBody) Close() error { return nil }

// Responses are never buffered whole: a media download is not read at
// all, a large JSON answer of unknown length only up to the sniff limit,
// and in both cases the client still gets every byte.
func TestSniffNeverBuffersLargeResponses(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 8<<20)
	for _, tc := range []struct {
		name     string
		ct       string
		length   int64
		body     []byte
		maxRead  int
		wantCode int
	}{
		{"media with length", "image/jpeg", int64(len(big)), big, 0, 0},
		{"media chunked", "image/jpeg", -1, big, 0, 0},
		{"large json with length", "application/json", int64(len(big)), big, 0, 0},
		{"large json chunked", "application/json", -1, append([]byte(`{"errcode":40001,`), big...), sniffLimit + 1, 0},
		{"small token error", "text/plain", -1, []byte(`{"errcode":40001,"errmsg":"x"}`), sniffLimit + 1, 40001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := &countingBody{r: bytes.NewReader(tc.body)}
			resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {tc.ct}}, ContentLength: tc.length, Body: body}
			code, err := sniff(resp)
			if err != nil || code != tc.wantCode {
				t.Fatalf("sniff = %d, %v; want %d", code, err, tc.wantCode)
			}
			if body.read > tc.maxRead {
				t.Errorf("sniff read %d bytes before the client, want at most %d", body.read, tc.maxRead)
			}
			got, _ := io.ReadAll(resp.Body)
			if !bytes.Equal(got, tc.body) {
				t.Errorf("the client got %d bytes, want the %d sent", len(got), len(tc.body))
			}
		})
	}
}

// Closing a small body twice must not hand its buffer, now another
// response's, back to the pool: the other response's bytes must survive.
func TestSniffBodyDoubleClose(t *testing.T) {
	mk := func(s string) *http.Response {
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(s)), ContentLength: int64(len(s))}
	}
	for range 100 {
		a := mk(`{"errcode":0,"a":"aaaa"}`)
		sniff(a)
		a.Body.Close()
		b := mk(`{"errcode":0,"b":"bbbb"}`)
		sniff(b) // likely reuses a's buffer
		a.Body.Close()
		a.Body.Close()
		c := mk(`{"errcode":0,"c":"cccc"}`)
		sniff(c) // would get b's buffer if a's Close gave it back
		got, _ := io.ReadAll(b.Body)
		if string(got) != `{"errcode":0,"b":"bbbb"}` {
			t.Fatalf("b's body became %q after a double Close", got)
		}
		b.Body.Close()
		c.Body.Close()
	}
}
