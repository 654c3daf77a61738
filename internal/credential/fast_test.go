package credential_test

import (
	"os"
	"testing"

	"github.com/caddy-wechat/wechat/internal/testserver"
)

// fastOnly is set under the "mutation" build tag (fast_mutation_test.go):
// gremlins runs the package's tests once per mutant, so tests that need a
// real server skip.
var fastOnly bool

func skipIfFast(t testing.TB) {
	t.Helper()
	if fastOnly {
		t.Skip("mutation build: needs a real server")
	}
}

// overlapIfFast lets a sleep-bound test (lease expiry, black-holed
// store) run alongside the others in a mutation build, where the package's
// wall time is paid once per mutant. Full runs keep them sequential, so
// their timeouts never compete with -race.
func overlapIfFast(t *testing.T) {
	if fastOnly {
		t.Parallel()
	}
}

// TestMain prints one loud line after the run if tests were skipped for
// want of a server binary (never under CI, where they fail instead).
func TestMain(m *testing.M) {
	code := m.Run()
	testserver.Report()
	os.Exit(code)
}
