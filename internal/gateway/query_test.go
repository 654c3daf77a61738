package gateway

import (
	"net/url"
	"strings"
	"testing"
)

// rewriteQuery's careful path keeps every part of the client's query that
// is not a credential, in order, and drops only empty parts and the
// client's credentials. FuzzRewriteQuery checks that what is kept is the
// client's; this checks that nothing of the client's is lost.
func TestRewriteQueryKeepsClientParts(t *testing.T) {
	const appid, secret = "wx1", "s&1"
	for _, tc := range []struct {
		raw  string
		r    Route
		want string
	}{
		{"a=1&access_token=x&b=%20", RouteToken, "a=1&b=%20&access_token=T"},
		{"&a=1&&ACCESS_TOKEN=x&appid=mine&", RouteToken, "a=1&appid=mine&access_token=T"},
		{"js_code=c&appid=theirs&secret=s&grant_type=authorization_code", RouteLogin,
			"js_code=c&grant_type=authorization_code&appid=wx1&secret=s%261"},
		{"refresh_token=r&app%69d=x&b=2", RouteAppIDOnly, "refresh_token=r&b=2&appid=wx1"},
		{"a=1&b=2", RouteToken, "a=1&b=2&access_token=T"},
		{"", RouteToken, "access_token=T"},
		{"", RouteLogin, "appid=wx1&secret=s%261"},
	} {
		if got := rewriteQuery(tc.raw, tc.r, "T", appid, secret); got != tc.want {
			t.Errorf("route %d: rewriteQuery(%q) = %q, want %q", tc.r, tc.raw, got, tc.want)
		}
	}
}

// requestTarget builds in the room it is given, so the common target costs
// send no allocation beyond its request copy; a target too long for the
// room, or no room, costs exactly one (the length is worked out before
// the first byte, never grown by append). Every form of the target is
// checked against the plain concatenation.
func TestRequestTargetRoom(t *testing.T) {
	const p, tok = "/cgi-bin/user/info", "TOKEN-0123456789"
	cases := []struct {
		p, raw string
		r      Route
		want   string
	}{
		{p, "openid=o1&lang=zh_CN", RouteToken, p + "?openid=o1&lang=zh_CN&access_token=" + tok},
		{p, "", RouteToken, p + "?access_token=" + tok},
		{"", "a=1", RouteToken, "a=1&access_token=" + tok},
		{"", "", RouteToken, "access_token=" + tok},
		{p, "a=1&Access_Token=x&b=2", RouteToken, p + "?a=1&b=2&access_token=" + tok},
		{p, "js_code=c&secret=x", RouteLogin, p + "?js_code=c&appid=wx1&secret=s"},
		{p, "refresh_token=r", RouteAppIDOnly, p + "?refresh_token=r&appid=wx1"},
		{p, "a=1", RouteUserSNS, p + "?a=1"},
		{p, "", RouteUserSNS, p},
		{"", "a=1", RouteUserSNS, "a=1"},
	}
	for _, tc := range cases {
		var room [targetRoom]byte
		if got := requestTarget(room[:0], tc.p, tc.raw, tc.r, tok, "wx1", "s", ""); got != tc.want {
			t.Errorf("route %d: requestTarget(%q, %q) = %q, want %q", tc.r, tc.p, tc.raw, got, tc.want)
		}
		if got := requestTarget(nil, tc.p, tc.raw, tc.r, tok, "wx1", "s", ""); got != tc.want {
			t.Errorf("route %d, no room: requestTarget(%q, %q) = %q, want %q", tc.r, tc.p, tc.raw, got, tc.want)
		}
	}

	room := make([]byte, 0, targetRoom)
	if n := testing.AllocsPerRun(100, func() {
		_ = requestTarget(room, p, "openid=o1&lang=zh_CN", RouteToken, tok, "", "", "")
	}); n != 0 {
		t.Errorf("target in the room: %v allocations, want 0", n)
	}
	// Room of exactly the target's length is room enough.
	exact := make([]byte, 0, len(p+"?openid=o1&lang=zh_CN&access_token="+tok))
	if n := testing.AllocsPerRun(100, func() {
		_ = requestTarget(exact, p, "openid=o1&lang=zh_CN", RouteToken, tok, "", "", "")
	}); n != 0 {
		t.Errorf("target in room of its exact length: %v allocations, want 0", n)
	}
	for _, dst := range [][]byte{nil, make([]byte, 0, 8)} {
		if n := testing.AllocsPerRun(100, func() {
			_ = requestTarget(dst, p, "openid=o1&lang=zh_CN", RouteToken, tok, "", "", "")
		}); n != 1 {
			t.Errorf("target with room %d: %v allocations, want 1", cap(dst), n)
		}
	}
	long := strings.Repeat("x", targetRoom)
	var r2 [targetRoom]byte
	if got := requestTarget(r2[:0], p, "q="+long, RouteToken, tok, "", "", ""); got != p+"?q="+long+"&access_token="+tok {
		t.Errorf("a target longer than the room is cut or wrong: %d bytes", len(got))
	}
}

func TestCanonicalPath(t *testing.T) {
	u, _ := url.Parse("/cgi-bin/token%2f..%2f..%2fsns%2fjscode2session")
	if got := CanonicalPath(u.Path); got != "/sns/jscode2session" {
		t.Errorf("canonical %q", got)
	}
	for in, want := range map[string]string{"": "/", "//a//b/": "/a/b", "/A/./B": "/A/B", "a": "/a"} {
		if got := CanonicalPath(in); got != want {
			t.Errorf("canonicalPath(%q) = %q, want %q", in, got, want)
		}
	}
}
