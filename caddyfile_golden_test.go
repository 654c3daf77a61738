package wechat

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

var update = flag.Bool("update", false, "rewrite testdata/caddyfile_adapt from the shipped Caddyfiles and README")

const goldenDir = "testdata/caddyfile_adapt"

// goldenSource is a Caddyfile we ship: a file, or a README block.
type goldenSource struct {
	golden string // file name in goldenDir
	origin string // where it comes from, for messages
	input  string // the Caddyfile as adapted
}

// shippedCaddyfiles lists every Caddyfile a user may copy: the example
// files and each fenced caddy/caddyfile block of README.md.
func shippedCaddyfiles(t *testing.T) []goldenSource {
	t.Helper()
	var out []goldenSource
	files, _ := filepath.Glob("examples/*.Caddyfile")
	for _, f := range append([]string{"Caddyfile.example"}, files...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.ReplaceAll(strings.TrimSuffix(f, ".Caddyfile"), "/", "-")
		out = append(out, goldenSource{golden: name + ".caddyfiletest", origin: f, input: string(b)})
	}
	blocks, err := readmeCaddyfiles("README.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, b := range blocks {
		seen[b.slug]++
		name := "readme-" + b.slug
		if n := seen[b.slug]; n > 1 {
			name += fmt.Sprint("-", n)
		}
		out = append(out, goldenSource{golden: name + ".caddyfiletest", origin: fmt.Sprintf("README.md:%d", b.line), input: siteOf(b.text)})
	}
	return out
}

type readmeBlock struct {
	line       int    // of the opening fence
	slug, text string // the heading it sits under; its content
}

var fence = regexp.MustCompile("^```\\s*(\\S*)")

// readmeCaddyfiles returns the fenced blocks tagged caddy or caddyfile.
func readmeCaddyfiles(path string) ([]readmeBlock, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []readmeBlock
	var cur *readmeBlock
	inFence := false
	slug := "top"
	for i, line := range strings.Split(string(b), "\n") {
		m := fence.FindStringSubmatch(line)
		switch {
		case m != nil && !inFence:
			inFence = true
			if m[1] == "caddy" || m[1] == "caddyfile" {
				cur = &readmeBlock{line: i + 1, slug: slug}
			}
		case m != nil && inFence:
			inFence = false
			if cur != nil {
				out = append(out, *cur)
				cur = nil
			}
		case inFence && cur != nil:
			cur.text += line + "\n"
		case strings.HasPrefix(line, "#"):
			slug = strings.Trim(regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(strings.TrimLeft(line, "# ")), "-"), "-")
		}
	}
	return out, nil
}

// siteOf makes a README snippet a whole Caddyfile: a snippet that starts
// with a directive rather than a site address or global options is put
// in a site block.
func siteOf(snippet string) string {
	for _, line := range strings.Split(snippet, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[0] == "{" || strings.ContainsAny(f[0], ":.") {
			return snippet
		}
		break
	}
	var b strings.Builder
	b.WriteString(":8080 {\n")
	for _, line := range strings.Split(strings.TrimRight(snippet, "\n"), "\n") {
		if line != "" {
			line = "\t" + line
		}
		b.WriteString(line + "\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// splitGolden splits a .caddyfiletest as Caddy's own test does.
func splitGolden(data string) (caddyfile, expected string) {
	parts := strings.SplitN(data, "----------", 2)
	if len(parts) < 2 {
		return strings.TrimSpace(parts[0]) + "\n", ""
	}
	return strings.TrimSpace(parts[0]) + "\n", strings.TrimSpace(parts[1])
}

// TestCaddyfileAdapt walks testdata/caddyfile_adapt the way Caddy's
// caddytest/integration/caddyfile_adapt_test.go does (a Caddyfile,
// "----------", then the JSON or an expected error), and checks that
// every shipped Caddyfile and README block has its golden twin.
// `go test -run TestCaddyfileAdapt -update .` rewrites them.
func TestCaddyfileAdapt(t *testing.T) {
	sources := shippedCaddyfiles(t)
	if *update {
		writeGoldens(t, sources)
	}

	files, err := os.ReadDir(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	goldens := map[string]string{}
	for _, f := range files {
		if f.IsDir() || !strings.HasSuffix(f.Name(), ".caddyfiletest") {
			continue
		}
		name := f.Name()
		data, err := os.ReadFile(filepath.Join(goldenDir, name))
		if err != nil {
			t.Fatal(err)
		}
		caddyfile, expected := splitGolden(string(data))
		goldens[name] = caddyfile
		t.Run(name, func(t *testing.T) {
			if strings.HasPrefix(expected, "{") {
				if !caddytest.CompareAdapt(t, name, caddyfile, "caddyfile", expected) {
					t.Errorf("%s adapts to other JSON; the diff is above (rerun with -update if intended)", name)
				}
				checkNoSecret(t, expected)
				return
			}
			_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
			if err == nil || !strings.Contains(err.Error(), expected) {
				t.Errorf("want an error containing %q, got %v", expected, err)
			}
		})
	}

	want := map[string]bool{}
	for _, s := range sources {
		want[s.golden] = true
		if got, ok := goldens[s.golden]; !ok || got != strings.TrimSpace(s.input)+"\n" {
			t.Errorf("%s has no golden twin %s/%s (or it differs); run: go test -run TestCaddyfileAdapt -update .", s.origin, goldenDir, s.golden)
		}
	}
	for name := range goldens {
		if (strings.HasPrefix(name, "readme-") || strings.HasPrefix(name, "examples-") || name == "Caddyfile.example.caddyfiletest") && !want[name] {
			t.Errorf("%s/%s no longer matches a shipped Caddyfile; run with -update to remove it", goldenDir, name)
		}
	}
}

// writeGoldens rewrites the goldens of the shipped Caddyfiles and removes
// those whose source is gone. Other files in goldenDir are hand-written.
func writeGoldens(t *testing.T, sources []goldenSource) {
	t.Helper()
	if err := os.MkdirAll(goldenDir, 0o755); err != nil {
		t.Fatal(err)
	}
	keep := map[string]bool{}
	for _, s := range sources {
		keep[s.golden] = true
		cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(s.input), nil)
		if err != nil {
			t.Fatalf("%s: %v", s.origin, err)
		}
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, cfg, "", "\t"); err != nil {
			t.Fatal(err)
		}
		out := strings.TrimSpace(s.input) + "\n----------\n" + pretty.String() + "\n"
		if err := os.WriteFile(filepath.Join(goldenDir, s.golden), []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := filepath.Glob(filepath.Join(goldenDir, "*.caddyfiletest"))
	sort.Strings(old)
	for _, f := range old {
		b := filepath.Base(f)
		if (strings.HasPrefix(b, "readme-") || strings.HasPrefix(b, "examples-")) && !keep[b] {
			if err := os.Remove(f); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// checkNoSecret: a secret in a golden is a placeholder, so a golden never
// holds one (and neither does the snippet it came from).
func checkNoSecret(t *testing.T, js string) {
	t.Helper()
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "secret" || k == "corpsecret" || k == "token" || k == "aes_key" || k == "encoding_aes_key") &&
					!strings.HasPrefix(s, "{env.") && !strings.HasPrefix(s, "{file.") {
					t.Errorf("%s %q is not an {env.*} or {file.*} placeholder", k, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var doc any
	if err := json.Unmarshal([]byte(js), &doc); err != nil {
		t.Fatal(err)
	}
	walk(doc)
}
