package wechat

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

const modulePath = "github.com/caddy-wechat/wechat"

// The modules and directives a build with the root package has, as
// xcaddy.md lists them. A module added to a subpackage that the root does
// not import would be missing from every user's build.
var (
	wantModules = []string{
		"admin.api.wechat",
		"admin.api.wechat_component",
		"http.handlers.wechat_component_callback",
		"http.handlers.wechat_jssdk",
		"http.handlers.wechat_push",
		"http.handlers.wechat_status",
		"http.reverse_proxy.transport.wechat",
		"http.reverse_proxy.transport.wechat_component",
		"wechat.stores.memcache",
		"wechat.stores.redis",
		"wechat.stores.sql",
		"wechat.stores.storage",
	}
	wantDirectives = []string{"wechat", "wechat_component", "wechat_component_callback", "wechat_jssdk", "wechat_push", "wechat_status"}
)

// goList runs `go list -deps -json` on patterns: every package with its
// non-test imports, closed over dependencies.
func goList(t *testing.T, patterns ...string) map[string][]string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list", "-deps", "-json=ImportPath,Deps,Imports"}, patterns...)...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := map[string][]string{}
	d := json.NewDecoder(strings.NewReader(string(out)))
	for d.More() {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := d.Decode(&p); err != nil {
			t.Fatal(err)
		}
		deps[p.ImportPath] = p.Deps
	}
	return deps
}

// TestModulesFromRootImport: importing the root alone (xcaddy's --with)
// registers every module and directive. The registry of this test binary
// also holds the test-only fake, which is left out by name; go list
// proves that each of our packages registering a module is a dependency
// of the root itself, not of its tests.
func TestModulesFromRootImport(t *testing.T) {
	var got []string
	for _, id := range caddy.Modules() {
		if strings.Contains(id, "wechat") && !strings.Contains(id, "wechat_fake") {
			got = append(got, id)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, wantModules) {
		t.Errorf("modules:\n got %q\nwant %q", got, wantModules)
	}
	for _, d := range wantDirectives {
		// Any error but "unrecognized directive" means the directive's
		// own parser ran (here it wants its required subdirectives).
		if _, err := adapt(":8080 {\n\t" + d + " {\n\t\tbogus_option_x\n\t}\n}\n"); err == nil || strings.Contains(err.Error(), "unrecognized directive") {
			t.Errorf("directive %s: %v; want its own parser's error", d, err)
		}
	}
	rootDeps := goList(t, modulePath)[modulePath]
	out, err := exec.Command("grep", "-rlE", `caddy\.RegisterModule\(|RegisterHandlerDirective\(`, "--include=*.go", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasSuffix(f, "_test.go") || strings.HasPrefix(f, "./fakewechat/") || strings.HasPrefix(f, "./bench/") ||
			strings.HasPrefix(f, "./sdktest/") || strings.HasPrefix(f, "./cmd/") {
			continue
		}
		dir := strings.TrimPrefix(f[:strings.LastIndex(f, "/")], ".")
		if dir == "" {
			continue // the root itself
		}
		if pkg := modulePath + dir; !slices.Contains(rootDeps, pkg) {
			t.Errorf("%s registers Caddy modules but the root does not import %s", f, pkg)
		}
	}
}

// TestImportRules checks the layering with go list: nothing imports the
// root but the commands, the benchmarks and the full-server tests; the
// engine, the request path and every other internal package import
// nothing from Caddy (but internal/testserver, for tests): the Caddy side
// the root and component/ share is caddykit/, outside internal/; the
// subpackages the root imports (component/, stores/, push/...) never
// import it back.
func TestImportRules(t *testing.T) {
	all := goList(t, "./...")
	for pkg, deps := range all {
		if !strings.HasPrefix(pkg, modulePath) {
			continue
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, modulePath), "/")
		importsRoot := slices.Contains(deps, modulePath)
		switch {
		case rel == "":
		case strings.HasPrefix(rel, "cmd/"), strings.HasPrefix(rel, "bench"), strings.HasPrefix(rel, "integration"):
		case importsRoot:
			t.Errorf("%s imports the root package; only cmd/, bench/ and integration/ may", pkg)
		}
		if strings.HasPrefix(rel, "internal/") && rel != "internal/testserver" {
			for _, d := range deps {
				if strings.HasPrefix(d, "github.com/caddyserver/caddy") {
					t.Errorf("%s reaches Caddy (%s): internal packages stay Caddy-free", pkg, d)
					break
				}
			}
		}
	}
	for _, p := range []string{"component", "stores", "internal/gateway", "internal/credential", "caddykit"} {
		if _, ok := all[modulePath+"/"+p]; !ok {
			t.Errorf("go list did not see %s/%s", modulePath, p)
		}
	}
}
