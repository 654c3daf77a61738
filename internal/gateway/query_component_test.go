package gateway

import (
	"strings"
	"testing"
)

// On the open platform's routes requestTarget drops every credential a
// client sent (the account's and the component's, in any case or
// escaping), adds the platform's, and builds the query in the room send
// gives it: no allocation of its own when it fits, one when it does not.
func TestComponentQueryRoom(t *testing.T) {
	const tok = "TOK-0123456789"
	for _, tc := range []struct {
		raw  string
		r    Route
		who  string
		want string
	}{
		{"", RouteComponent, "", "component_access_token=" + tok},
		{"a=1&b=2", RouteToken, "", "a=1&b=2&access_token=" + tok},
		{"a=1&ACCESS_TOKEN=x&%73ecret=s&&component_appsecret=y&b=2", RouteToken, "", "a=1&b=2&access_token=" + tok},
		{"component_access_token=mine&x=1", RouteComponent, "", "x=1&component_access_token=" + tok},
		{"appid=wxA&code=C&component_appid=evil&Component_Access_Token=mine", RouteComponentSNS, "",
			"appid=wxA&code=C&component_appid=wxcomp&component_access_token=" + tok},
		{"appid=wxEvil&code=C", RouteComponentSNSNamed, "wxA",
			"code=C&appid=wxA&component_appid=wxcomp&component_access_token=" + tok},
	} {
		var room [targetRoom]byte
		for _, dst := range [][]byte{room[:0], nil} {
			if got := requestTarget(dst, "", tc.raw, tc.r, tok, "wxcomp", "", tc.who); got != tc.want {
				t.Errorf("route %d: requestTarget(%q) = %q, want %q", tc.r, tc.raw, got, tc.want)
			}
		}
	}
	var room [targetRoom]byte
	if n := testing.AllocsPerRun(100, func() { _ = requestTarget(room[:0], "", "a=1&b=2", RouteComponent, tok, "wxcomp", "", "") }); n != 0 {
		t.Errorf("query in the room: %v allocations, want 0", n)
	}
	long := strings.Repeat("x", targetRoom)
	if got := requestTarget(room[:0], "", "q="+long, RouteComponent, tok, "wxcomp", "", ""); got != "q="+long+"&component_access_token="+tok {
		t.Errorf("a query longer than the room is cut or wrong: %d bytes", len(got))
	}
}
