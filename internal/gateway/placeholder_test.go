package gateway

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzPlaceholder: whatever surrounds it and however its letters are cased,
// a placeholder is found, in a query or header and in a body alike.
func FuzzPlaceholder(f *testing.F) {
	f.Add("a=1&b=", "", uint32(0))
	f.Add("___", "_x_", uint32(0xffffffff))
	f.Add("access_token=", "&zh_CN", uint32(12345))
	f.Fuzz(func(t *testing.T, before, after string, cases uint32) {
		p := []byte(Placeholder)
		for i := range p {
			if 'A' <= p[i] && p[i] <= 'Z' && cases&(1<<(i%32)) != 0 {
				p[i] += 'a' - 'A'
			}
		}
		s := before + string(p) + after
		if !HoldsPlaceholder(s) || !bodyHoldsPlaceholder([]byte(s)) {
			t.Fatalf("placeholder not found in %q", s)
		}
		asciiUpper := strings.Map(func(r rune) rune {
			if 'a' <= r && r <= 'z' {
				return r - ('a' - 'A')
			}
			return r
		}, before+after)
		if !strings.Contains(asciiUpper, PlaceholderPrefix) && strings.ContainsAny(before+after, "%+") == false && HoldsPlaceholder(before+after) {
			t.Fatalf("false positive on %q", before+after)
		}
	})
}

// BenchmarkRefusePlaceholder: the last check runs on every request.
func BenchmarkRefusePlaceholder(b *testing.B) {
	u, _ := url.Parse("http://api.weixin.qq.com/cgi-bin/user/info?openid=oABCDEFGHIJKLMNOPQRSTUVWXYZ012&lang=zh_CN&access_token=ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
	req := &http.Request{URL: u, Header: http.Header{
		"User-Agent": {"Go-http-client/1.1"}, "Accept-Encoding": {"gzip"}, "X-Forwarded-For": {"127.0.0.1"},
		"X-Forwarded-Proto": {"http"}, "X-Forwarded-Host": {"127.0.0.1:8080"}, "Content-Type": {"application/json; charset=utf-8"},
		"Accept": {"*/*"}, "Via": {"1.1 Caddy"},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if refusePlaceholder(req) != nil {
			b.Fatal("refused")
		}
	}
}

func TestHoldsPlaceholder(t *testing.T) {
	p := Placeholder
	for _, s := range []string{
		p, "access_token=" + p, "x=" + strings.ToLower(p), "a=1&b=" + p + "&c",
		"x=%43ADDY_WECHAT_PLACEHOLDER_1", "x=CADDY%5FWECHAT%5FPLACEHOLDER%5F1",
		"x=CADDY_WECHAT_PLACEHOLDER_%zz", "x=caddy_wechat_placeholder_+",
		"a_b__c=_____CaDdY_wEcHaT_pLaCeHoLdEr_", PlaceholderPrefix, "_" + PlaceholderPrefix,
	} {
		if !HoldsPlaceholder(s) {
			t.Errorf("holdsPlaceholder(%q) = false", s)
		}
	}
	for _, s := range []string{"", "_", "access_token=abc", "CADDY_WECHAT_PLACEHOLDE", "ADDY_WECHAT_PLACEHOLDER_", "%zz",
		"CADDY_WECHAT_%2BPLACEHOLDER_", "CADDY-WECHAT-PLACEHOLDER-", "zh_CN&lang=zh_CN"} {
		if HoldsPlaceholder(s) {
			t.Errorf("holdsPlaceholder(%q) = true", s)
		}
	}
	for _, b := range []string{p, "x" + strings.ToLower(p), `{"t":"cAdDy_WeChAt_PlAcEhOlDeR_"}`} {
		if !bodyHoldsPlaceholder([]byte(b)) {
			t.Errorf("bodyHoldsPlaceholder(%q) = false", b)
		}
	}
	for _, b := range []string{"", "CADDY_WECHAT_PLACEHOLDER", "CADDY_WECHAT\x7fPLACEHOLDER_", "\x00CADDY-WECHAT_PLACEHOLDER_"} {
		if bodyHoldsPlaceholder([]byte(b)) {
			t.Errorf("bodyHoldsPlaceholder(%q) = true", b)
		}
	}
	if !strings.HasPrefix(p, PlaceholderPrefix) || len(p) != len(PlaceholderPrefix)+32 {
		t.Errorf("placeholder %q", p)
	}
}

// A body of exactly the prefix is refused too: the prefix alone is what
// marks a placeholder, of any gateway.
func TestBodyHoldsPlaceholderAtItsLength(t *testing.T) {
	if !bodyHoldsPlaceholder([]byte(PlaceholderPrefix)) || !bodyHoldsPlaceholder([]byte(strings.ToLower(PlaceholderPrefix))) {
		t.Error("a body that is the prefix, exactly, was let through")
	}
	if bodyHoldsPlaceholder([]byte(PlaceholderPrefix[:len(PlaceholderPrefix)-1])) {
		t.Error("a body one byte short of the prefix was refused")
	}
}
