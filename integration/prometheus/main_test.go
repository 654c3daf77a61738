// Package prometheus runs a real Prometheus against a real gateway. It is
// a process of its own because the gateway's metrics are process-wide:
// the rules and queries it checks must see only the series of the
// gateway it starts, never those other integration tests left behind.
package prometheus

import (
	"os"
	"testing"

	"github.com/caddy-wechat/wechat/internal/testserver"
)

// TestMain prints one loud line after the run if tests were skipped for
// want of a binary (never under CI, where they fail instead).
func TestMain(m *testing.M) {
	code := m.Run()
	testserver.Report()
	os.Exit(code)
}
