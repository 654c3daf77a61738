package gateway

import (
	"strings"
	"testing"
)

// Upstreams are scheme://host[:port] and nothing else, one scheme for
// all; a bare host gets the fix spelled out (http for a loopback or IP,
// https for a name), as the Caddyfile gives it.
func TestParseUpstreams(t *testing.T) {
	if got, err := ParseUpstreams(nil); err != nil || len(got) != 1 || got[0].String() != DefaultUpstream {
		t.Fatalf("no upstream: %v %v; want %s", got, err, DefaultUpstream)
	}
	got, err := ParseUpstreams([]string{"https://api.weixin.qq.com/", "https://api2.weixin.qq.com:443"})
	if err != nil || len(got) != 2 || got[0].String() != "https://api.weixin.qq.com" || got[1].Host != "api2.weixin.qq.com:443" {
		t.Fatalf("two upstreams: %v %v", got, err)
	}
	for in, want := range map[string]string{
		"127.0.0.1:9081":                 "scheme is missing; write http://127.0.0.1:9081",
		"localhost:9081":                 "write http://localhost:9081",
		"api.weixin.qq.com":              "write https://api.weixin.qq.com",
		"ftp://api.weixin.qq.com":        "must be http or https",
		"https://":                       "no host",
		"https://api.weixin.qq.com/cgi":  "give only scheme://host[:port]",
		"https://api.weixin.qq.com?a=1":  "give only scheme://host[:port]",
		"https://u:p@api.weixin.qq.com":  "give only scheme://host[:port]",
		"https://api.weixin.qq.com#frag": "give only scheme://host[:port]",
		"https://a b":                    "bad upstream",
	} {
		if _, err := ParseUpstreams([]string{in}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want %q", in, err, want)
		}
	}
	if _, err := ParseUpstreams([]string{"https://api.weixin.qq.com", "http://127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "mix http and https") {
		t.Errorf("mixed schemes: %v", err)
	}
}

// Every rid goes, wherever it is in the text.
func TestStripRIDs(t *testing.T) {
	in := "invalid credential, rid: 6475e3a8-1b2c3d4e-5f6a7b8c and again rid:abc-1 end"
	if got := StripRIDs(in); strings.Contains(got, "rid") || !strings.HasPrefix(got, "invalid credential,") || !strings.HasSuffix(got, " end") {
		t.Errorf("StripRIDs = %q", got)
	}
}
