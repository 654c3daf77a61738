package wechatcmd_test

import (
	"os"
	"testing"

	"github.com/caddy-wechat/wechat/internal/testserver"
)

// TestMain names the tests skipped for want of a server binary, loudly.
func TestMain(m *testing.M) {
	code := m.Run()
	testserver.Report()
	os.Exit(code)
}
