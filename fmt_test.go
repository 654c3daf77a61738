package wechat

import (
	"bytes"
	"os"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestShippedCaddyfilesFormatted: Caddy warns "input is not formatted" on
// every start of an unformatted file, which is the first thing a newcomer
// sees; keep the shipped files `caddy fmt`-clean.
func TestShippedCaddyfilesFormatted(t *testing.T) {
	for _, name := range []string{"Caddyfile.example", "examples/demo.Caddyfile"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := caddyfile.Format(b); !bytes.Equal(got, b) {
			t.Errorf("%s is not formatted; run `go run ./cmd/caddy fmt --overwrite %s`. Formatted:\n%s", name, name, got)
		}
	}
}
