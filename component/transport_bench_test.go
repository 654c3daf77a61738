package component

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/testserver"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
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

// BenchmarkComponentWarm: calls on behalf of 100 authorizers whose scrub
// sets are built (the steady state: each authorizer makes many calls per
// token), against BenchmarkRoundTrip/gateway's account call.
func BenchmarkComponentWarm(b *testing.B) {
	t, ids := benchComponent(b, 100)
	for _, form := range []string{"header", "path"} {
		b.Run(form, func(b *testing.B) {
			reqs := make([]*http.Request, len(ids))
			for i, id := range ids {
				if form == "header" {
					reqs[i], _ = http.NewRequest(http.MethodGet, "http://api.weixin.qq.com/cgi-bin/user/info?openid=o1&lang=zh_CN", nil)
					reqs[i].Header.Set(AuthorizerHeader, id)
				} else {
					reqs[i], _ = http.NewRequest(http.MethodGet, "http://api.weixin.qq.com/authorizer/"+id+"/cgi-bin/user/info?openid=o1&lang=zh_CN", nil)
				}
				resp, err := t.RoundTrip(reqs[i])
				drain(b, resp, err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				resp, err := t.RoundTrip(reqs[i%len(reqs)])
				drain(b, resp, err)
				i++
			}
		})
	}
}

// BenchmarkComponentNeedleMemory reports the heap an authorizer's kept
// scrub set costs (B/authorizer), over 10,000 authorizers.
func BenchmarkComponentNeedleMemory(b *testing.B) {
	for b.Loop() {
		t, ids := benchComponent(b, 10000)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for _, id := range ids {
			_ = (*componentHost)(t).Needles(id)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(ids)), "B/authorizer")
		runtime.KeepAlive(t)
	}
}

// An authorizer call through the one request loop costs what an account
// call costs: at most 2 allocations more than the same call through a
// plain transport, as the root's TestRoundTripAllocs holds the account's
// to (BenchmarkComponentWarm and BenchmarkRoundTrip give the figures),
// once its scrub set is built, and that set is kept.
func TestComponentRoundTripAllocs(t *testing.T) {
	ct, ids := benchComponent(t, 2)
	plain := stubTransport()
	creq, _ := http.NewRequest(http.MethodGet, "http://api.weixin.qq.com/authorizer/"+ids[1]+"/cgi-bin/user/info?openid=o1&lang=zh_CN", nil)
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
	c, p := run(ct, creq), run(&plain, preq)
	if c > p+accountExtraAllocs+2 {
		t.Errorf("authorizer call: %v allocations, plain %v: want at most %d more", c, p, accountExtraAllocs+2)
	}
	if ns := (*componentHost)(ct).Needles(ids[1]); ns != (*componentHost)(ct).Needles(ids[1]) {
		t.Error("an authorizer's scrub set is rebuilt on every call")
	}
}

// accountExtraAllocs is what the root's TestRoundTripAllocs lets an
// account call cost over a plain one.
const accountExtraAllocs = 2

const (
	testComponentAppID  = "wxcomponent0000001"
	testComponentSecret = "component-secret-0123456789abcdef"
	benchToken          = testserver.BenchToken
)

// stubTransport answers every call in memory (testserver.StubUpstream).
func stubTransport() reverseproxy.HTTPTransport {
	ht := &http.Transport{}
	ht.RegisterProtocol("http", testserver.StubUpstream{Body: testserver.OKBody})
	return reverseproxy.HTTPTransport{Transport: ht}
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
