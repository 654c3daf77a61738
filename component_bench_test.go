package wechat

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"go.uber.org/zap"
)

// benchComponent is a wechat_component transport over the in-memory
// upstream, with n authorizers holding warm tokens.
func benchComponent(b testing.TB, n int) (*ComponentTransport, []string) {
	base, _ := url.Parse("http://api.weixin.qq.com")
	p, err := newPlatform(testComponentAppID, testComponentSecret, []*url.URL{base}, nil, 0, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = p.Destruct() })
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("wxa%015d", i)
		tok := credential.NewToken(benchToken[:len(benchToken)-6]+fmt.Sprintf("%06d", i), 7200, time.Now(), "store")
		if err := p.reg.Authorize(context.Background(), &credential.Authorization{AuthorizerAppID: ids[i], RefreshToken: "r", Token: tok}); err != nil {
			b.Fatal(err)
		}
	}
	return &ComponentTransport{HTTPTransport: stubTransport(), p: p}, ids
}

// BenchmarkComponentRoundTrip: a call on behalf of one of 10,000
// authorizers, by header and by path prefix; compare with
// BenchmarkRoundTrip's gateway and plain.
func BenchmarkComponentRoundTrip(b *testing.B) {
	t, ids := benchComponent(b, 10000)
	b.Run("header", func(b *testing.B) {
		req, _ := http.NewRequest(http.MethodGet, "http://api.weixin.qq.com/cgi-bin/user/info?openid=o1&lang=zh_CN", nil)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			req.Header.Set(AuthorizerHeader, ids[i%len(ids)])
			resp, err := t.RoundTrip(req)
			drain(b, resp, err)
			i++
		}
	})
	b.Run("path", func(b *testing.B) {
		req, _ := http.NewRequest(http.MethodGet, "http://api.weixin.qq.com/authorizer/"+ids[4321]+"/cgi-bin/user/info?openid=o1&lang=zh_CN", nil)
		b.ReportAllocs()
		for b.Loop() {
			resp, err := t.RoundTrip(req)
			drain(b, resp, err)
		}
	})
}

// reverse_proxy sends the same request again on a retry: RoundTrip must
// leave it naming the authorizer.
func TestComponentRoundTripLeavesRequestIntact(t *testing.T) {
	ct, ids := benchComponent(t, 2)
	for _, mk := range []func() *http.Request{
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, "http://api.weixin.qq.com/cgi-bin/user/info?openid=o1", nil)
			r.Header.Set(AuthorizerHeader, ids[1])
			return r
		},
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, "http://api.weixin.qq.com/authorizer/"+ids[1]+"/cgi-bin/user/info?openid=o1", nil)
			return r
		},
	} {
		req := mk()
		before := req.URL.String() + req.Header.Get(AuthorizerHeader)
		for range 2 {
			resp, err := ct.RoundTrip(req)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%v %v", resp, err)
			}
			resp.Body.Close()
		}
		if after := req.URL.String() + req.Header.Get(AuthorizerHeader); after != before {
			t.Fatalf("request changed: %q → %q", before, after)
		}
	}
}
