package gateway

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// BenchmarkSniffScrub is BenchmarkSniff plus the scrub every answer now
// gets: the cost on the hot path of the small OK answer.
func BenchmarkSniffScrub(b *testing.B) {
	for _, c := range []struct {
		name string
		body []byte
	}{{"ok", okBody}, {"token_error", tokenErrBody}} {
		b.Run(c.name, func(b *testing.B) {
			ns := NewNeedles(NeedleKey{}, nil, benchToken, "0123456789abcdef0123456789abcdef")
			req, _ := http.NewRequest(http.MethodGet, "http://api.weixin.qq.com/cgi-bin/user/info", nil)
			var body resetBody
			hdr := http.Header{"Content-Type": {"application/json; encoding=utf-8"}, "Content-Length": {"100"}, "Date": {"Tue, 24 Nov 2026 04:00:00 GMT"}, "Connection": {"keep-alive"}}
			resp := &http.Response{StatusCode: 200, Header: hdr, ContentLength: int64(len(c.body))}
			b.ReportAllocs()
			for b.Loop() {
				body.Reset(c.body)
				resp.Body = &body
				_, _ = sniff(resp)
				_ = Scrub(CanonicalPath(req.URL.Path), resp, ns)
				resp.Body.Close()
			}
		})
	}
}

// BenchmarkScrubStream is the streaming replacer over a 1 MiB JSON answer.
func BenchmarkScrubStream(b *testing.B) {
	ns := scrubNeedles()
	body := bytes.Repeat([]byte(`{"openid":"o1","nickname":"x"},`), 1<<15)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		sr := &scrubReader{ns: ns, src: bytes.NewReader(body), c: io.NopCloser(nil)}
		if _, err := io.Copy(io.Discard, sr); err != nil {
			b.Fatal(err)
		}
	}
}
