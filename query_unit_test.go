package wechat

import "testing"

// rewriteQuery's careful path keeps every part of the client's query that
// is not a credential, in order, and drops only empty parts and the
// client's credentials. FuzzRewriteQuery checks that what is kept is the
// client's; this checks that nothing of the client's is lost.
func TestRewriteQueryKeepsClientParts(t *testing.T) {
	const appid, secret = "wx1", "s&1"
	for _, tc := range []struct {
		raw  string
		r    route
		want string
	}{
		{"a=1&access_token=x&b=%20", routeToken, "a=1&b=%20&access_token=T"},
		{"&a=1&&ACCESS_TOKEN=x&appid=mine&", routeToken, "a=1&appid=mine&access_token=T"},
		{"js_code=c&appid=theirs&secret=s&grant_type=authorization_code", routeLogin,
			"js_code=c&grant_type=authorization_code&appid=wx1&secret=s%261"},
		{"refresh_token=r&app%69d=x&b=2", routeAppIDOnly, "refresh_token=r&b=2&appid=wx1"},
		{"a=1&b=2", routeToken, "a=1&b=2&access_token=T"},
		{"", routeToken, "access_token=T"},
		{"", routeLogin, "appid=wx1&secret=s%261"},
	} {
		if got := rewriteQuery(tc.raw, tc.r, "T", appid, secret); got != tc.want {
			t.Errorf("route %d: rewriteQuery(%q) = %q, want %q", tc.r, tc.raw, got, tc.want)
		}
	}
}
