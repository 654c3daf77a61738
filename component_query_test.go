package wechat

import (
	"strings"
	"testing"
)

// componentQuery drops every credential a client sent, adds the
// platform's, and builds the query in the room send gives it: no
// allocation of its own when it fits, one when it does not.
func TestComponentQueryRoom(t *testing.T) {
	const tok = "TOK-0123456789"
	for _, tc := range []struct{ raw, param, want string }{
		{"", "component_access_token", "component_access_token=" + tok},
		{"a=1&b=2", "access_token", "a=1&b=2&access_token=" + tok},
		{"a=1&ACCESS_TOKEN=x&%73ecret=s&&component_appsecret=y&b=2", "access_token", "a=1&b=2&access_token=" + tok},
		{"component_access_token=mine&x=1", "component_access_token", "x=1&component_access_token=" + tok},
	} {
		var room [componentRoom]byte
		for _, dst := range [][]byte{room[:0], nil} {
			if got := componentQuery(dst, tc.raw, tc.param, tok); got != tc.want {
				t.Errorf("componentQuery(%q, %q) = %q, want %q", tc.raw, tc.param, got, tc.want)
			}
		}
	}
	var room [componentRoom]byte
	if n := testing.AllocsPerRun(100, func() { _ = componentQuery(room[:0], "a=1&b=2", "access_token", tok) }); n != 0 {
		t.Errorf("query in the room: %v allocations, want 0", n)
	}
	exact := make([]byte, 0, len("a=1&b=2&access_token="+tok))
	if n := testing.AllocsPerRun(100, func() { _ = componentQuery(exact, "a=1&b=2", "access_token", tok) }); n != 0 {
		t.Errorf("query in room of its exact length: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = componentQuery(nil, "a=1&b=2", "access_token", tok) }); n != 1 {
		t.Errorf("query without room: %v allocations, want 1", n)
	}
	long := strings.Repeat("x", componentRoom)
	if got := componentQuery(room[:0], "q="+long, "access_token", tok); got != "q="+long+"&access_token="+tok {
		t.Errorf("a query longer than the room is cut or wrong: %d bytes", len(got))
	}
}
