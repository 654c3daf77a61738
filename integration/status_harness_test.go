package integration

// The status page's harness: a Caddy in process, fakes, headless Chromium.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-wechat/wechat"
	"github.com/caddy-wechat/wechat/fakewechat"
	"github.com/caddy-wechat/wechat/internal/testserver"
)

// spFake is a fake WeChat behind an httptest server that can answer
// 40001 for chosen tokens (a token WeChat has dropped) and rewrite the
// Date header (a skewed clock).
type spFake struct {
	*fakewechat.Server
	URL string

	mu     sync.Mutex
	reject map[string]bool
	date   string
}

func spNewFake(t testing.TB, o fakewechat.Options) *spFake {
	t.Helper()
	f := &spFake{Server: fakewechat.New(o), reject: map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		bad, date := f.reject[r.URL.Query().Get("access_token")], f.date
		f.mu.Unlock()
		if date != "" {
			w.Header().Set("Date", date) // net/http keeps a Date a handler set
		}
		if bad {
			io.WriteString(w, `{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest rid: x"}`)
			return
		}
		f.Server.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func spFreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// spCaddy is a running Caddy.
type spCaddy struct {
	URL   string // http://127.0.0.1:port of the site
	Admin string // 127.0.0.1:port of the admin endpoint
}

// spStartCaddy adapts a Caddyfile in which {SITE} and {ADMIN} stand for
// the site's and the admin endpoint's addresses, and runs it in this
// process until the test ends. Caddy is a process-wide singleton: the
// tests here do not run in parallel.
func spStartCaddy(t testing.TB, caddyfile string) *spCaddy {
	t.Helper()
	c := &spCaddy{URL: fmt.Sprintf("http://127.0.0.1:%d", spFreePort(t)), Admin: fmt.Sprintf("127.0.0.1:%d", spFreePort(t))}
	text := strings.NewReplacer("{SITE}", c.URL, "{ADMIN}", c.Admin, "{LOG}", filepath.Join(t.TempDir(), "caddy.log")).Replace(caddyfile)
	cfg, warns, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapt: %v\n%s", err, text)
	}
	for _, w := range warns {
		if !strings.Contains(w.Message, "formatted") {
			t.Fatalf("adapt warning: %s", w.Message)
		}
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { caddy.Stop() })
	return c
}

// chromium is the path of Debian's headless browser, or "" (the test
// skips, except under CI where it fails: CI installs it).
func chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (apt-get install chromium); CI must run the browser tests")
	}
	testserver.Note("chromium", t.Name())
	t.Skip("chromium is not installed")
	return ""
}

// browse runs headless Chromium on url with args (--dump-dom, or
// --screenshot=FILE): its own profile, no network but loopback, bounded
// in time. It returns stdout.
func browse(t testing.TB, bin, url string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	profile := t.TempDir()
	all := append([]string{"--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-extensions", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--metrics-recording-only", "--mute-audio", "--hide-scrollbars",
		"--user-data-dir=" + profile, "--proxy-server=direct://", "--proxy-bypass-list=*"}, args...)
	all = append(all, url)
	cmd := exec.CommandContext(ctx, bin, all...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("chromium timed out on %s", url)
		}
		t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}
