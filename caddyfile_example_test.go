package wechat

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestShippedCaddyfilesFormatted: Caddy warns "input is not formatted" on
// every start of an unformatted file, which is the first thing a newcomer
// sees; keep the shipped files `caddy fmt`-clean.
func TestShippedCaddyfilesFormatted(t *testing.T) {
	examples, _ := filepath.Glob("examples/*.Caddyfile")
	for _, name := range append([]string{"Caddyfile.example"}, examples...) {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := caddyfile.Format(b); !bytes.Equal(got, b) {
			t.Errorf("%s is not formatted; run `go run ./cmd/caddy fmt --overwrite %s`. Formatted:\n%s", name, name, got)
		}
	}
	// README blocks are copied into users' Caddyfiles: tabs, and no
	// aligned trailing comments (caddy fmt collapses them).
	blocks, err := readmeCaddyfiles("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if got := caddyfile.Format([]byte(b.text)); string(got) != b.text {
			t.Errorf("README.md:%d: the caddyfile block is not `caddy fmt`-clean. Formatted:\n%s", b.line, got)
		}
	}
}
