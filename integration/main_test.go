// Package integration runs whole-system tests: a real Caddy with the
// wechat modules, the fake WeChat, and real third-party programs
// (Prometheus). Each feature's harness is a file of its own.
package integration

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
