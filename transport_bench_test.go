package wechat

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/testserver"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// Hot-path micro-benchmarks (issue 5). Run them with
//
//	go test -bench . -benchmem -run '^$'
//
// The end-to-end load benchmark against plain reverse_proxy is ./bench;
// BENCHMARKS.md has the figures.

const benchToken = testserver.BenchToken

// okBody is the size and shape of a typical small WeChat answer.
var okBody = testserver.OKBody

// warmAccount is an account whose cache already holds a fresh token, as in
// steady state; no refresher runs.
func warmAccount(tb testing.TB) *sharedAccount {
	tb.Helper()
	a, err := newAccount("bench", accountSettings{appid: testAppID, secret: testSecret, api: tokenAPIStable, ceiling: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = a.Destruct() })
	a.tokens.SetSource(fixedSource{})
	if _, err := a.Token(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return a
}

// fixedSource hands out benchToken.
type fixedSource struct{}

func (fixedSource) Fetch(context.Context, credential.FetchOptions) (*tokenEntry, error) {
	return credential.NewToken(benchToken, 7200, time.Now(), "fetch"), nil
}

func BenchmarkTokenWarm(b *testing.B) {
	a, ctx := warmAccount(b), context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Token(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// The parallel variant shows the lock-free read does not contend.
func BenchmarkTokenWarmParallel(b *testing.B) {
	a, ctx := warmAccount(b), context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.Token(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestTokenWarmNoAlloc pins the promise of the fast path: a warm lookup
// allocates nothing, so it can run on every request for free.
func TestTokenWarmNoAlloc(t *testing.T) {
	a, ctx := warmAccount(t), context.Background()
	if n := testing.AllocsPerRun(1000, func() { _, _ = a.Token(ctx) }); n != 0 {
		t.Errorf("warm Token allocates %v times per call, want 0", n)
	}
}

// resetBody is a body to read again, for benchmarks.
type resetBody struct{ bytes.Reader }

func (*resetBody) Close() error { return nil }

// stubTransport is a Caddy HTTP transport whose *http.Transport hands
// every http:// request to the in-memory stub (RegisterProtocol), so both
// the gateway and the plain baseline run the real Caddy and net/http code
// up to the wire.
func stubTransport() reverseproxy.HTTPTransport {
	ht := &http.Transport{}
	ht.RegisterProtocol("http", testserver.StubUpstream{Body: okBody})
	return reverseproxy.HTTPTransport{Transport: ht}
}

// benchTransport is a Transport wired like Provision leaves it, with a
// warm token and no metrics registry.
func benchTransport(b *testing.B) *Transport {
	t := &Transport{HTTPTransport: stubTransport(), secret: testSecret}
	t.acct = warmAccount(b)
	t.provisionRequestPath(caddy.Context{})
	return t
}

// drain consumes a response the way reverse_proxy would.
func drain(b *testing.B, resp *http.Response, err error) {
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
}

// BenchmarkRoundTrip compares the gateway's RoundTrip with the plain HTTP
// transport reverse_proxy would use, against the same in-memory upstream;
// the difference is the gateway's cost per request.
func BenchmarkRoundTrip(b *testing.B) {
	b.Run("gateway", func(b *testing.B) {
		t := benchTransport(b)
		req, _ := http.NewRequest(http.MethodGet, "http://api.weixin.qq.com/cgi-bin/user/info?openid=o1&lang=zh_CN", nil)
		b.ReportAllocs()
		for b.Loop() {
			resp, err := t.RoundTrip(req)
			drain(b, resp, err)
		}
	})
	b.Run("plain", func(b *testing.B) {
		ht := stubTransport()
		req, _ := http.NewRequest(http.MethodGet, "http://api.weixin.qq.com/cgi-bin/user/info?openid=o1&lang=zh_CN&access_token="+benchToken, nil)
		b.ReportAllocs()
		for b.Loop() {
			resp, err := ht.RoundTrip(req)
			drain(b, resp, err)
		}
	})
	b.Run("gateway_post", func(b *testing.B) {
		t := benchTransport(b)
		body := []byte(`{"touser":"o1","msgtype":"text","text":{"content":"hello"}}`)
		var rb resetBody
		req, _ := http.NewRequest(http.MethodPost, "http://api.weixin.qq.com/cgi-bin/message/custom/send", &rb)
		b.ReportAllocs()
		for b.Loop() {
			rb.Reset(body)
			req.Body, req.ContentLength = &rb, int64(len(body))
			resp, err := t.RoundTrip(req)
			drain(b, resp, err)
		}
	})
}

// TestRoundTripAllocs pins issue 13's work: beyond what the plain HTTP
// transport allocates, a GET costs the gateway only its query string and
// its one request copy (which also holds the sniffed body's handle).
func TestRoundTripAllocs(t *testing.T) {
	gw := &Transport{HTTPTransport: stubTransport(), secret: testSecret}
	gw.acct = warmAccount(t)
	gw.provisionRequestPath(caddy.Context{})
	plain := stubTransport()
	greq, _ := http.NewRequest(http.MethodGet, "http://api.weixin.qq.com/cgi-bin/user/info?openid=o1&lang=zh_CN", nil)
	preq, _ := http.NewRequest(http.MethodGet, "http://api.weixin.qq.com/cgi-bin/user/info?openid=o1&lang=zh_CN&access_token="+benchToken, nil)
	run := func(rt http.RoundTripper, req *http.Request) float64 {
		return testing.AllocsPerRun(200, func() {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	g, p := run(gw, greq), run(&plain, preq)
	if g > p+2 {
		t.Errorf("gateway RoundTrip: %v allocations, plain %v: want at most 2 more", g, p)
	}
}
