package gateway

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestUpstreamHeader(t *testing.T) {
	h := http.Header{"Authorization": {"Basic c3ZjOnB3"}, "Proxy-Authorization": {"x"}, "Cookie": {"sid=1"}, "Accept-Encoding": {"br, gzip;q=0.5"}, "X-Keep": {"1"}}
	keep := false
	out := upstreamHeader(h, keep, "", false)
	for _, k := range CallerCredentialHeaders {
		if out.Get(k) != "" {
			t.Errorf("%s reached upstream", k)
		}
	}
	if out.Get("X-Keep") != "1" || out.Get("Accept-Encoding") != "gzip" {
		t.Errorf("upstream headers %v", out)
	}
	if h.Get("Authorization") == "" {
		t.Error("the caller's header map was changed")
	}
	if got := upstreamHeader(http.Header{"Accept-Encoding": {"br"}}, keep, "", false); got.Get("Accept-Encoding") != "" {
		t.Errorf("br-only caller: Accept-Encoding %q, want none", got.Get("Accept-Encoding"))
	}
	// The gateway's own header is dropped even when nothing else is.
	if got := upstreamHeader(http.Header{"Wechat-Authorizer-Appid": {"wxa"}, "X-A": {"1"}}, keep, "Wechat-Authorizer-Appid", false); got.Get("Wechat-Authorizer-Appid") != "" || got.Get("X-A") != "1" {
		t.Errorf("drop header alone: upstream gets %v", got)
	}
	// Nothing to change: the caller's own map, not a copy.
	for _, plain := range []http.Header{{"X-A": {"1"}}, {"X-A": {"1"}, "Accept-Encoding": {"gzip"}}} {
		if got := upstreamHeader(plain, keep, "", false); reflect.ValueOf(got).Pointer() != reflect.ValueOf(plain).Pointer() {
			t.Errorf("%v: copied with nothing to change", plain)
		}
	}
	// Every way of asking for encodings ends as gzip or nothing.
	for _, tc := range []struct {
		ae   []string
		want string
	}{
		{[]string{"gzip", "br"}, "gzip"},
		{[]string{"br", "zstd"}, ""},
		{[]string{"deflate, gzip"}, "gzip"},
		{[]string{"GZIP"}, "GZIP"}, // one value, gzip in any case: as it is
		{[]string{"gzip;q=0"}, ""},
		{[]string{"gzip;q=0.0, br"}, ""},
		{[]string{"gzip; q=0.2"}, "gzip"},
	} {
		got := upstreamHeader(http.Header{"Accept-Encoding": tc.ae}, keep, "", false)
		if v := got.Values("Accept-Encoding"); strings.Join(v, ",") != tc.want {
			t.Errorf("Accept-Encoding %q: upstream gets %q, want %q", tc.ae, v, tc.want)
		}
	}
	keep = true
	if upstreamHeader(h, keep, "", false).Get("Authorization") == "" {
		t.Error("keep_caller_auth dropped Authorization")
	}
}
