package stores

import (
	"os"
	"testing"

	"github.com/caddy-wechat/wechat/internal/testserver"
)

// TestMain prints one loud line after the run if tests were skipped for
// want of a server binary (never under CI, where they fail instead).
func TestMain(m *testing.M) {
	code := m.Run()
	testserver.Report()
	os.Exit(code)
}
