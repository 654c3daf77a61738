package wechat

import (
	"os"
	"testing"

	"github.com/caddy-wechat/wechat/internal/testserver"
)

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

// TestMain prints one loud line after the run if tests were skipped for
// want of a server binary (never under CI, where they fail instead).
func TestMain(m *testing.M) {
	code := m.Run()
	testserver.Report()
	os.Exit(code)
}
