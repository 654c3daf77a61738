package caddykit

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// Options takes only the subdirectives a directive points at its fields:
// a nil field is an option it does not take, so one directive never
// parses another's.
func TestOptionsTakeOnlyTheirFields(t *testing.T) {
	var appid string
	var size int64
	f := Options{AppID: &appid, MaxReplayBody: &size}
	d := caddyfile.NewTestDispenser("x")
	if known, err := f.Parse(d, "appid", []string{"wx1"}); !known || err != nil || appid != "wx1" {
		t.Fatalf("appid: %v %v %q", known, err, appid)
	}
	if known, err := f.Parse(d, "max_replay_body", []string{"2MiB"}); !known || err != nil || size != 2<<20 {
		t.Fatalf("max_replay_body: %v %v %d", known, err, size)
	}
	for _, name := range []string{"secret", "memcache", "dial_timeout", "keep_caller_auth", "nonsense"} {
		if known, _ := f.Parse(d, name, []string{"x"}); known {
			t.Errorf("%s taken by a directive that has no field for it", name)
		}
	}
	if _, err := f.Parse(d, "appid", []string{"a", "b"}); err == nil {
		t.Error("appid with two arguments accepted")
	}
	if _, err := f.Parse(d, "max_replay_body", []string{"lots"}); err == nil {
		t.Error("max_replay_body lots accepted")
	}
	var ups []string
	f = Options{TokenEndpoints: &ups}
	if _, err := f.Parse(d, "upstream", []string{"127.0.0.1:9"}); err == nil || err.Error() == "" {
		t.Error("an upstream with no scheme accepted")
	}
}

// Several upstreams fail over in order, retry a request on the next one,
// and avoid a failed one for a while; one upstream gets no load
// balancing at all (reverse_proxy's defaults).
func TestReverseProxyToFailoverDefaults(t *testing.T) {
	h := httpcaddyfile.Helper{Dispenser: caddyfile.NewTestDispenser("reverse_proxy")}
	a, _ := url.Parse("https://api.weixin.qq.com")
	b, _ := url.Parse("http://127.0.0.1:8080")
	rp, err := ReverseProxyTo(h, caddyfile.NewTestDispenser("reverse_proxy"), []*url.URL{a, b}, json.RawMessage(`{"protocol":"wechat"}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(rp.Upstreams) != 2 || rp.Upstreams[0].Dial != "api.weixin.qq.com:443" || rp.Upstreams[1].Dial != "127.0.0.1:8080" {
		t.Fatalf("upstreams %+v", rp.Upstreams)
	}
	lb := rp.LoadBalancing
	if lb == nil || lb.Retries != 1 || string(lb.SelectionPolicyRaw) != `{"policy":"first"}` || len(lb.RetryMatchRaw) != 2 {
		t.Fatalf("load balancing %+v", lb)
	}
	if hc := rp.HealthChecks; hc == nil || hc.Passive == nil || hc.Passive.MaxFails != 1 {
		t.Fatalf("health checks %+v", hc)
	}
	if string(rp.TransportRaw) != `{"protocol":"wechat"}` {
		t.Fatalf("transport %s", rp.TransportRaw)
	}
	one, err := ReverseProxyTo(h, caddyfile.NewTestDispenser("reverse_proxy"), []*url.URL{a}, nil)
	if err != nil || one.LoadBalancing != nil || one.HealthChecks != nil {
		t.Fatalf("one upstream: %v %+v %+v", err, one.LoadBalancing, one.HealthChecks)
	}
}

// A transport block: ours to parse, the http transport's to its parser
// (tls here), anything else refused by name; the defaults apply unless set.
func TestUnmarshalTransportSplitsTheBlock(t *testing.T) {
	var appid string
	opts := Options{AppID: &appid}
	refuse := func(d *caddyfile.Dispenser, name string) error { return d.Errf("refused %s", name) }

	var ht reverseproxy.HTTPTransport
	d := caddyfile.NewTestDispenser("x {\n\tappid wx1\n\ttls\n\tresponse_header_timeout 5s\n}")
	if err := UnmarshalTransport(d, &ht, opts.Parse, refuse); err != nil {
		t.Fatal(err)
	}
	if appid != "wx1" || ht.TLS == nil || ht.ResponseHeaderTimeout != caddy.Duration(5*time.Second) || ht.DialTimeout != caddy.Duration(3*time.Second) {
		t.Errorf("appid %q, tls %v, header timeout %v, dial timeout %v", appid, ht.TLS, ht.ResponseHeaderTimeout, ht.DialTimeout)
	}

	d = caddyfile.NewTestDispenser("x {\n\tfrobnicate 1\n}")
	if err := UnmarshalTransport(d, new(reverseproxy.HTTPTransport), opts.Parse, refuse); err == nil || !strings.Contains(err.Error(), "refused frobnicate") {
		t.Errorf("unknown subdirective: %v", err)
	}
	d = caddyfile.NewTestDispenser("x extra {\n}")
	if err := UnmarshalTransport(d, new(reverseproxy.HTTPTransport), opts.Parse, refuse); err == nil {
		t.Error("an argument after the transport name was taken")
	}
}
