package wechat

import "testing"

// fastOnly is set under the "mutation" build tag (fast_mutation_test.go):
// gremlins runs the package's tests once per mutant, so tests that start
// Caddy or memcached skip and the request path's unit tests remain.
var fastOnly bool

func skipIfFast(t testing.TB) {
	t.Helper()
	if fastOnly {
		t.Skip("mutation build: needs a real Caddy or memcached")
	}
}
