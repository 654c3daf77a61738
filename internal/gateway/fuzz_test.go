package gateway

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

func FuzzRewriteQuery(f *testing.F) {
	for _, s := range []string{
		"", "openid=o1", "access_token=x", "ACCESS_TOKEN=x&a=1", "acc%65ss_token=x", "access_token%20=x",
		"+access_token=x", "secret=s&SECRET=t", "secr%65t=s", "appid=wx1&secret=s&js_code=c",
		"app%69d=wx1&appid=wx2", "a=1&&b=2&", "access_token", "access_token%", "%zz=1&access_token=2",
		"a=%E4%BD%A0&access_token=%00", "ſecret=x", "a=1;access_token=x", "%09access_token%0a=x",
	} {
		for r := range 5 {
			f.Add(s, uint8(r), "TOKEN_abc-123")
		}
	}
	f.Add("a=1", uint8(0), "tok with &=+% chars")
	const appid, secret = "wx00000000test0001", "S3cr3t&=+%/?"
	f.Fuzz(func(t *testing.T, raw string, r uint8, tok string) {
		if tok == "" {
			tok = "T"
		}
		rt := Route(r % 5)
		out := rewriteQuery(raw, rt, url.QueryEscape(tok), appid, secret)
		// The request line's target is that query after the path, built
		// in one piece (send's URL.Opaque); no '?' for no query.
		want := "/cgi-bin/a%20b?" + out
		if out == "" {
			want = "/cgi-bin/a%20b"
		}
		if got := requestTarget(nil, "/cgi-bin/a%20b", raw, rt, url.QueryEscape(tok), appid, secret, ""); got != want {
			t.Fatalf("route %d: requestTarget(%q) = %q, want %q", rt, raw, got, want)
		}
		one := func(name, want string) {
			if got := credKeys(out, name); len(got) != 1 || got[0] != want {
				t.Fatalf("route %d: rewriteQuery(%q) = %q: %s %q, want exactly [%q]", rt, raw, out, name, got, want)
			}
		}
		none := func(name string) {
			if got := credKeys(out, name); len(got) != 0 {
				t.Fatalf("route %d: rewriteQuery(%q) = %q keeps the client's %s %q", rt, raw, out, name, got)
			}
		}
		switch rt {
		case RouteToken:
			one("access_token", tok)
			none("secret")
		case RouteLogin:
			one("appid", appid)
			one("secret", secret)
			none("access_token")
		case RouteAppIDOnly:
			one("appid", appid)
			none("secret")
			none("access_token")
		default:
			if out != raw {
				t.Fatalf("route %d: rewriteQuery(%q) = %q, want it untouched", rt, raw, out)
			}
			return
		}
		// The client's other parameters pass unchanged and in order:
		// what precedes our own is a subsequence of the client's parts.
		var added int
		switch rt {
		case RouteToken:
			added = 1
		case RouteLogin:
			added = 2
		case RouteAppIDOnly:
			added = 1
		}
		parts := strings.Split(out, "&")
		kept, client := parts[:len(parts)-added], strings.Split(raw, "&")
		i := 0
		for _, p := range kept {
			for i < len(client) && client[i] != p {
				i++
			}
			if i == len(client) {
				t.Fatalf("rewriteQuery(%q) = %q: part %q is not the client's", raw, out, p)
			}
			i++
		}
	})
}

func FuzzSniff(f *testing.F) {
	f.Add([]byte(`{"errcode":40001,"errmsg":"invalid credential"}`), "text/plain", false, false, true)
	f.Add([]byte(`{"errcode":42001,"errmsg":"expired"}`), "application/json; encoding=utf-8", true, false, true)
	f.Add([]byte(`{"errcode":0,"errmsg":"ok"}`), "", false, false, false)
	f.Add(bytes.Repeat([]byte("x"), sniffLimit+1), "application/json", false, false, true)
	f.Add(bytes.Repeat([]byte("y"), sniffLimit), "text/html", false, false, false)
	f.Add([]byte("\xff\xd8\xff\xe0binary"), "image/jpeg", false, false, true)
	f.Add([]byte(`{"errcode":0,"errmsg":"ok","data":"`), "text/plain", false, true, false)
	f.Add([]byte(`{"errcode":40001,"errmsg":"cut`), "application/json", false, true, true)
	f.Add([]byte(`{"errcode":40001}`), "bogus/;;", false, false, true)
	f.Fuzz(func(t *testing.T, body []byte, ct string, gz, cut, withLength bool) {
		wire := body
		hdr := http.Header{}
		if ct != "" {
			hdr.Set("Content-Type", ct)
		}
		if gz {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(body)
			zw.Close()
			wire = buf.Bytes()
			hdr.Set("Content-Encoding", "gzip")
		}
		length := int64(-1)
		if withLength {
			length = int64(len(wire))
			if cut {
				length += 100 // declared, never sent
			}
		}
		var cutErr error
		if cut {
			cutErr = io.ErrUnexpectedEOF // what net/http reports for a body that breaks off
		}
		resp := &http.Response{StatusCode: 200, Header: hdr, ContentLength: length,
			Body: &flakyBody{r: bytes.NewReader(wire), err: cutErr}}
		code, serr := sniff(resp)
		if serr != nil {
			// A small body that broke off is reported, so the gateway
			// answers 502 rather than a truncated 200.
			if !cut {
				t.Fatalf("sniff error %v on a complete body", serr)
			}
			return
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, wire) {
			t.Fatalf("the client would get %d bytes that differ from the %d sent", len(got), len(wire))
		}
		if cut && err == nil {
			t.Fatalf("an upstream body that broke off (%d bytes, length %d) reads as complete", len(wire), length)
		}
		if !cut && err != nil {
			t.Fatalf("read error %v on a complete body", err)
		}
		if !cut && !gz && len(body) <= sniffLimit && sniffable(resp) && code != errcodeOf(body) {
			t.Fatalf("sniff = %d, errcodeOf = %d", code, errcodeOf(body))
		}
		if code != 0 && len(wire) > sniffLimit {
			t.Fatalf("sniffed errcode %d from a %d-byte body", code, len(wire))
		}
	})
}

// flakyBody yields data, then err instead of io.EOF when err is set.
type flakyBody struct {
	r   io.Reader
	err error
}

func FuzzErrcode(f *testing.F) {
	for _, s := range []string{
		`{"errcode":40001,"errmsg":"invalid credential"}`,
		`{"errcode":0,"errmsg":"ok"}`,
		`{"errcode":-1,"errmsg":"system error"}`,
		` {"errmsg":"x","errcode" : 42001 }`,
		`{"data":{"errcode":40001},"errcode":0}`,
		`{"errcode":40001.0}`,
		`{"errcode":1e5}`,
		`{"errcode":"40001"}`,
		`{"errcode":99999999999999999999}`,
		`{"errcode":40014,"errcode":0}`,
		`{"ERRCODE":40001}`,
		`{"errcode":-`,
		`{"errcode":40001`,
		`[{"errcode":40001}]`,
		`"errcode":40001`,
		"",
		"\xef\xbb\xbf{\"errcode\":40001}",
	} {
		f.Add([]byte(s), int32(40001), "invalid credential")
	}
	f.Add([]byte(`{}`), int32(-1), "system \"busy\"")
	f.Add([]byte(`{}`), int32(2147483647), "\x00\u2028")
	f.Fuzz(func(t *testing.T, b []byte, code int32, msg string) {
		got := errcodeOf(b)
		// Sound: a code reported is the body's real top-level errcode.
		if got != 0 {
			var top struct {
				Errcode json.Number `json:"errcode"`
			}
			if err := json.Unmarshal(b, &top); err != nil {
				t.Fatalf("errcodeOf(%q) = %d but the body is not a JSON object: %v", b, got, err)
			}
			if n, err := strconv.Atoi(top.Errcode.String()); err != nil || n != got {
				t.Fatalf("errcodeOf(%q) = %d, real top-level errcode %q", b, got, top.Errcode)
			}
		}
		// Complete on WeChat's own shape, whatever the message.
		canon, _ := json.Marshal(struct {
			Errcode int32  `json:"errcode"`
			Errmsg  string `json:"errmsg"`
		}{code, msg})
		if got := errcodeOf(canon); got != int(code) {
			t.Fatalf("errcodeOf(%s) = %d, want %d", canon, got, code)
		}
	})
}

func (b *flakyBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF && b.err != nil {
		return n, b.err
	}
	return n, err
}

func (b *flakyBody) Close() error { return nil }

// credKeys returns the values of every key in raw that names name once
// percent-decoded, trimmed and compared case-insensitively (ASCII): what a
// lenient server would read as that parameter.
func credKeys(raw, name string) []string {
	var vals []string
	for part := range strings.SplitSeq(raw, "&") {
		k, v, _ := strings.Cut(part, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if asciiEqualFold(strings.Trim(k, " \t\r\n\v\f"), name) {
			if dv, err := url.QueryUnescape(v); err == nil {
				v = dv
			}
			vals = append(vals, v)
		}
	}
	return vals
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
