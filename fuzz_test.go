package wechat

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

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// Native fuzz targets (issue 7). The seeds run with every `go test`; run
// one target for longer with, for example:
//
//	go test -run '^$' -fuzz '^FuzzErrcode$' -fuzztime 30s .

// --- errcode sniffer ---

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

// flakyBody yields data, then err instead of io.EOF when err is set.
type flakyBody struct {
	r   io.Reader
	err error
}

func (b *flakyBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF && b.err != nil {
		return n, b.err
	}
	return n, err
}

func (b *flakyBody) Close() error { return nil }

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

// --- query rewrite ---

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
		rt := route(r % 5)
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
		case routeToken:
			one("access_token", tok)
			none("secret")
		case routeLogin:
			one("appid", appid)
			one("secret", secret)
			none("access_token")
		case routeAppIDOnly:
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
		case routeToken:
			added = 1
		case routeLogin:
			added = 2
		case routeAppIDOnly:
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

// --- Caddyfile ---

func FuzzCaddyfile(f *testing.F) {
	for _, s := range []string{
		"appid wx1\nsecret {env.S}",
		"appid wx1\nsecret s\nupstream https://api.weixin.qq.com https://api2.weixin.qq.com",
		"appid wx1\nsecret s\nupstream http://127.0.0.1:1\ntoken_api classic\nfetch_timeout 2s\nmax_replay_body 1MB",
		"appid wx1\nsecret s\nmemcache 127.0.0.1:11211 [::1]:11211\nmemcache_prefix p:\nmemcache_timeout 50ms",
		"appid wx1\nsecret s\ndial_timeout 3\nresponse_header_timeout 1s\nlb_try_duration 5s\nheader_up X-A b",
		"appid wx1\nsecret s\nupstream ftp://x",
		"appid wx1\nsecret s\nupstream http://a https://b",
		"appid wx1\nsecret s\nupstream http://u@h/p?q#f",
		"appid\nsecret",
		"appid wx1 wx2\nsecret s",
		"appid wx1\nsecret s\nto http://evil",
		"appid wx1\nsecret s\ntransport http {\n}",
		"appid wx1\nsecret s\nmax_replay_body -1",
		"appid wx1\nsecret s\nmemcache nohostport",
		"appid wx1\nsecret s\nhandle_response {\n\trespond 200\n}",
		"appid wx1\nsecret s\n}\n{",
		"wechat\n",
		"http://x {\n\twechat /api/* {\n\t\tappid a\n\t\tsecret b\n\t}\n}",
		":80 {\n\twechat extra {\n\t}\n}",
		"{\n\torder wechat first\n}\n:80 {\n\twechat {\n\t\tappid a\n\t\tsecret b\n\t\tupstream http://[::1]:9\n\t}\n}",
	} {
		f.Add(s)
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	f.Fuzz(func(t *testing.T, src string) {
		if strings.Contains(src, "import") || strings.Contains(src, "{$") || strings.Contains(src, "<<") {
			return // hermetic: no files, no environment, no heredoc noise
		}
		text := src
		if !strings.Contains(src, "wechat") {
			text = ":8080 {\n\twechat {\n" + src + "\n\t}\n}\n"
		}
		cfg, _, err := adapter.Adapt([]byte(text), map[string]any{"filename": "Caddyfile"})
		if err != nil {
			return
		}
		var doc any
		if err := json.Unmarshal(cfg, &doc); err != nil {
			t.Fatalf("adapted to invalid JSON: %v", err)
		}
		// Every wechat transport the adapter emits has credentials and
		// upstreams that Provision will accept.
		var walk func(v any)
		walk = func(v any) {
			switch v := v.(type) {
			case map[string]any:
				if v["protocol"] == "wechat" {
					b, _ := json.Marshal(v)
					var tr Transport
					if err := json.Unmarshal(b, &tr); err != nil {
						t.Fatalf("wechat transport does not decode: %v\n%s", err, b)
					}
					if tr.AppID == "" || tr.Secret == "" {
						t.Fatalf("wechat transport without appid/secret: %s", b)
					}
					if _, err := parseUpstreams(tr.Upstreams); err != nil {
						t.Fatalf("adapter accepted upstreams that Provision rejects: %v\n%s", err, text)
					}
				}
				for _, c := range v {
					walk(c)
				}
			case []any:
				for _, c := range v {
					walk(c)
				}
			}
		}
		walk(doc)
	})
}
