package gateway

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// A sniffed body says io.EOF with its last bytes, so reverse_proxy's copy
// loop ends after one read, as with net/http's own bodies.
func TestSniffBodyEOFWithLastBytes(t *testing.T) {
	resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		ContentLength: int64(len(okBody)), Body: io.NopCloser(bytes.NewReader(okBody))}
	if _, err := sniff(resp); err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	n, err := resp.Body.Read(buf)
	if n != len(okBody) || err != io.EOF || !bytes.Equal(buf[:n], okBody) {
		t.Fatalf("Read = %d, %v; want %d, io.EOF", n, err, len(okBody))
	}
	if n, err := resp.Body.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("second Read = %d, %v; want 0, io.EOF", n, err)
	}
}

func BenchmarkSniff(b *testing.B) {
	for _, c := range []struct {
		name string
		body []byte
	}{{"ok", okBody}, {"token_error", tokenErrBody}} {
		b.Run(c.name, func(b *testing.B) {
			var body resetBody
			resp := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json; encoding=utf-8"}}, ContentLength: int64(len(c.body))}
			b.ReportAllocs()
			for b.Loop() {
				body.Reset(c.body)
				resp.Body = &body
				_, _ = sniff(resp)
				resp.Body.Close() // returns the pooled buffer
			}
		})
	}
}

// resetBody is a reusable response body, so the benchmark measures sniff
// and not the harness.
type resetBody struct{ bytes.Reader }

func BenchmarkErrcodeOf(b *testing.B) {
	for _, c := range []struct {
		name string
		body []byte
	}{{"ok", okBody}, {"token_error", tokenErrBody}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = errcodeOf(c.body)
			}
		})
	}
}

func BenchmarkRewriteQuery(b *testing.B) {
	esc := credential.NewToken(benchToken, 7200, time.Now(), "fetch").Escaped()
	for _, q := range []struct{ name, raw string }{
		{"plain", "openid=o1&lang=zh_CN"},
		{"client_token", "openid=o1&access_token=CLIENT&lang=zh_CN"},
	} {
		b.Run(q.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = rewriteQuery(q.raw, RouteToken, esc, "", "")
			}
		})
	}
}

func (*resetBody) Close() error { return nil }

const benchToken = "82_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUv"

// okBody is the size and shape of a typical small WeChat answer.
var okBody = []byte(`{"errcode":0,"errmsg":"ok","openid":"o1","nickname":"bench","subscribe":1,"language":"zh_CN"}`)

var tokenErrBody = []byte(`{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest rid: 6543-21"}`)
