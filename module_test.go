package wechat

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// A request to a host that is not a token endpoint is logged once.
func TestWarnOnceForHostOutsideTokenEndpoints(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	tr := &Transport{logger: zap.New(core), acct: &sharedAccount{appid: "wx"}}
	tr.bases = []*url.URL{{Scheme: "https", Host: "api.weixin.qq.com"}}
	tr.checkHost("api.weixin.qq.com")
	tr.checkHost("api2.weixin.qq.com")
	tr.checkHost("api2.weixin.qq.com")
	if n := logs.FilterMessageSnippet("not among the token endpoints").Len(); n != 1 {
		t.Fatalf("%d warnings; want 1", n)
	}
}

// Everything that changes how a credential is fetched or shared names a
// different account.
func TestAccountKeyCoversFetchSettings(t *testing.T) {
	base := accountKey("wx", "s", "stable", "memcache:a", "https://api.weixin.qq.com,|10s")
	for _, k := range []string{
		accountKey("wx", "s2", "stable", "memcache:a", "https://api.weixin.qq.com,|10s"),
		accountKey("wx", "s", "classic", "memcache:a", "https://api.weixin.qq.com,|10s"),
		accountKey("wx", "s", "stable", "memcache:b", "https://api.weixin.qq.com,|10s"),
		accountKey("wx", "s", "stable", "memcache:a|p2:", "https://api.weixin.qq.com,|10s"),
		accountKey("wx", "s", "stable", "memcache:a", "https://api2.weixin.qq.com,|10s"),
		accountKey("wx", "s", "stable", "memcache:a", "https://api.weixin.qq.com,|5s"),
	} {
		if k == base {
			t.Fatalf("two settings share the key %s", k)
		}
	}
	if strings.Contains(base, "s\x00") || strings.Contains(base, ":s:") {
		t.Fatal("the key holds the secret")
	}
}

// The request target, which Provision decides to build whole into
// URL.Opaque where no proxy is in the way (the request path sends it).

// upstreamOf serves f (with its hook) on a server of its own, started by
// start, and logs each call's request line.
func upstreamOf(f *fakeWeChat, start func(*httptest.Server)) (*httptest.Server, *upstreamLog) {
	log := new(upstreamLog)
	f.setHook(log.hook(nil))
	up := httptest.NewUnstartedServer(f.srv.Config.Handler)
	start(up)
	return up, log
}

// The request target built whole into URL.Opaque is byte for byte what
// net/http writes from the path and RawQuery: same escaping, same '?'.
func TestRequestTargetAsNetHTTPWritesIt(t *testing.T) {
	f := newFake(t)
	up, log := upstreamOf(f, (*httptest.Server).Start)
	defer up.Close()
	opaque := unitTransport(t, []string{f.URL}, nil)
	plain := unitTransport(t, []string{f.URL}, nil)
	plain.opaque = false
	if !opaque.opaque {
		t.Fatal("no proxy, yet the request target is not built into URL.Opaque")
	}
	for _, target := range []string{
		"/cgi-bin/user/info?openid=o1&lang=zh_CN",
		"/cgi-bin/user/info",
		"/cgi-bin/user/info?",
		"/cgi-bin/a%20b/%E4%BD%A0/c+d;e?q=%20x+y&z",
		"/cgi-bin/user%2finfo?openid=o",
		"//cgi-bin//./user/../user/info?openid=o",
		"/cgi-bin/user/info?access_token=theirs&openid=o",
		"/sns/jscode2session?js_code=c&grant_type=authorization_code",
		"/sns/oauth2/refresh_token?refresh_token=r",
		"/sns/userinfo?access_token=users&openid=o",
		"/cgi-bin/component/api_x?component_access_token=theirs",
	} {
		var got [2]string
		for i, tr := range []*Transport{opaque, plain} {
			if _, err := unitDo(t, tr, http.MethodGet, up.URL+target, ""); err != nil {
				t.Fatalf("%s: %v", target, err)
			}
			got[i] = log.last(t).target
		}
		if got[0] != got[1] {
			t.Errorf("%s: sent as %q through URL.Opaque, %q through RawQuery", target, got[0], got[1])
		}
	}
}

// Behind a forward proxy a cleartext request line must be in absolute
// form: the target stays in RawQuery (net/http writes an Opaque as it is).
func TestProxyGetsAbsoluteTarget(t *testing.T) {
	f := newFake(t)
	var mu sync.Mutex
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.RequestURI)
		mu.Unlock()
		out := r.Clone(r.Context())
		out.RequestURI = ""
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	defer proxy.Close()
	tr := unitTransport(t, []string{f.URL}, func(tr *Transport) {
		tr.ForwardProxyURL = proxy.URL
		tr.ResponseHeaderTimeout = caddy.Duration(time.Second)
	})
	if tr.opaque {
		t.Fatal("behind a proxy, yet the request target is built into URL.Opaque")
	}
	r := mustDo(t, tr, http.MethodGet, f.URL+"/cgi-bin/user/info?openid=o1", "")
	if r.status != 200 || r.errcode != 0 {
		t.Fatalf("through the proxy: %+v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	last := seen[len(seen)-1]
	if !strings.HasPrefix(last, f.URL+"/cgi-bin/user/info?openid=o1&access_token=") {
		t.Fatalf("the proxy got %q, want the absolute URL with the token", last)
	}
}

// Over TLS with HTTP/2 the target built into URL.Opaque becomes the
// :path, token included.
func TestRequestTargetOverHTTP2(t *testing.T) {
	f := newFake(t)
	up, log := upstreamOf(f, func(up *httptest.Server) {
		up.EnableHTTP2 = true
		up.StartTLS()
	})
	defer up.Close()
	tr := unitTransport(t, []string{f.URL}, func(tr *Transport) {
		tr.TLS = &reverseproxy.TLSConfig{InsecureSkipVerify: true}
		tr.ResponseHeaderTimeout = caddy.Duration(time.Second)
	})
	if !tr.opaque {
		t.Fatal("TLS upstream, no proxy, yet the request target is not built into URL.Opaque")
	}
	r := mustDo(t, tr, http.MethodGet, up.URL+"/cgi-bin/user/info?openid=o1", "")
	if r.status != 200 || r.errcode != 0 {
		t.Fatalf("over HTTP/2: %+v", r)
	}
	tok := tr.acct.tokens.Current()
	if got, want := log.last(t).target, "HTTP/2.0 /cgi-bin/user/info?openid=o1&access_token="+tok.Escaped(); got != want {
		t.Fatalf("upstream got %q, want %q", got, want)
	}
}
