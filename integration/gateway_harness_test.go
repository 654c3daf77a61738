package integration

// The gateway's harness: the fake WeChat behind an httptest server and one
// Caddy in process with one wechat account in front of it. It is the root
// package's harness_test.go, speaking only through exported API and HTTP.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
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
)

const (
	testAppID  = "wx00000000test0001"
	testSecret = "0123456789abcdef0123456789abcdef"
)

// fakeWeChat is the fake behind an httptest server, with a hook that lets a
// test answer some requests itself (for faults the fake does not model).
type fakeWeChat struct {
	*fakewechat.Server
	URL string
	srv *httptest.Server

	mu     sync.Mutex
	reject map[string]bool // tokens this wrapper answers 40001 for
	hook   func(w http.ResponseWriter, r *http.Request) bool
}

func newFake(t testing.TB) *fakeWeChat {
	t.Helper()
	f := &fakeWeChat{Server: fakewechat.New(fakewechat.Options{AppID: testAppID, Secret: testSecret}), reject: map[string]bool{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		hook, bad := f.hook, f.reject[r.URL.Query().Get("access_token")]
		f.mu.Unlock()
		if hook != nil && hook(w, r) {
			return
		}
		if bad {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, `{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest rid: test"}`)
			return
		}
		f.Server.ServeHTTP(w, r)
	}))
	f.URL = f.srv.URL
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeWeChat) rejectToken(tok string) {
	f.mu.Lock()
	f.reject[tok] = true
	f.mu.Unlock()
}

func (f *fakeWeChat) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	f.hook = h
	f.mu.Unlock()
}

// gateway is a running Caddy with the wechat module.
type runningCaddy struct {
	URL     string // http://127.0.0.1:port
	Admin   string // admin endpoint address
	LogFile string
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCaddy adapts caddyfile (with %[1]d = HTTP port, %[2]d = admin port,
// %[3]s = log file) and runs it in this process. Caddy is a process-wide
// singleton, so these tests do not run in parallel.
func startCaddy(t testing.TB, caddyfile string) *runningCaddy {
	t.Helper()
	g := &runningCaddy{LogFile: filepath.Join(t.TempDir(), "caddy.log")}
	port, admin := freePort(t), freePort(t)
	g.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	g.Admin = fmt.Sprintf("127.0.0.1:%d", admin)
	loadCaddyfile(t, fmt.Sprintf(caddyfile, port, admin, g.LogFile))
	t.Cleanup(func() {
		caddy.Stop()
		if t.Failed() {
			logTail(t, g.LogFile, 40)
		}
	})
	return g
}

// logTail logs the last n lines of Caddy's log, so that a failure in CI
// shows what the gateway did (the log holds no credential: the log tests
// prove it).
func logTail(t testing.TB, file string, n int) {
	lines := strings.Split(strings.TrimRight(readFile(t, file), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("the last %d lines of %s:\n%s", len(lines), file, strings.Join(lines, "\n"))
}

// loadCaddyfile adapts and loads a config, failing the test on error.
func loadCaddyfile(t testing.TB, text string) {
	t.Helper()
	cfg, err := adaptCaddyfile(text)
	if err != nil {
		t.Fatalf("adapt: %v\n%s", err, text)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("load: %v", err)
	}
	// The old servers close their keep-alive connections; a request on one
	// of them as it closes would read EOF, which is Caddy's reload and not
	// what a test asserts. Clients reconnect, as real ones do.
	client.CloseIdleConnections()
}

func adaptCaddyfile(text string) ([]byte, error) {
	cfg, warns, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return nil, err
	}
	for _, w := range warns {
		if !strings.Contains(w.Message, "formatted") {
			return nil, fmt.Errorf("adapt warning: %s", w.Message)
		}
	}
	return cfg, nil
}

// basicConfig is one site with one wechat account in front of upstream.
// The tests run on the real clock and reject tokens fetched a moment ago;
// min_token_age -1ns lifts the minimum age that would keep them (the rule
// itself is tested in internal/credential on a fake clock). An extra
// min_token_age later in the block overrides it.
func basicConfig(upstream, extra string) string {
	return `{
	admin 127.0.0.1:%[2]d
	log {
		output file %[3]s
		level DEBUG
	}
}
http://127.0.0.1:%[1]d {
	wechat {
		appid {env.TEST_WECHAT_APPID}
		secret {env.TEST_WECHAT_SECRET}
		upstream ` + upstream + `
		min_token_age -1ns
		` + extra + `
	}
}
`
}

func setEnv(t testing.TB) {
	t.Setenv("TEST_WECHAT_APPID", testAppID)
	t.Setenv("TEST_WECHAT_SECRET", testSecret)
}

// resetAccounts stops any running config, so each test starts cold.
// (The root's unit tests check that a stop releases every account.)
func resetAccounts(t testing.TB) {
	t.Helper()
	caddy.Stop()
}

// result is a decoded JSON answer through the gateway.
type result struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any
}

func (r result) errcode() int {
	if v, ok := r.JSON["errcode"].(float64); ok {
		return int(v)
	}
	return 0
}

var client = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}}

func do(t testing.TB, method, url string, body []byte, hdr ...string) result {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return result{}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("%s %s: reading body: %v", method, url, err)
	}
	r := result{Status: resp.StatusCode, Header: resp.Header, Body: b}
	_ = json.Unmarshal(b, &r.JSON)
	return r
}

func get(t testing.TB, url string) result { t.Helper(); return do(t, http.MethodGet, url, nil) }

// setup starts cold: a fresh fake WeChat, and one Caddy with one wechat
// account in front of it (extra adds subdirectives).
func setup(t testing.TB, extra string) (*fakeWeChat, *runningCaddy) {
	t.Helper()
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	return f, startCaddy(t, basicConfig(f.URL, extra))
}

// parallel runs f n times at once and waits.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); f(i) }()
	}
	wg.Wait()
}

// restart stops every config and starts a new Caddy in front of the same
// fake WeChat, as a gateway restart does: whatever the new instance knows,
// it got from its store, and every fetch it makes shows in f's counters.
func restart(t testing.TB, f *fakeWeChat, extra string) *runningCaddy {
	t.Helper()
	resetAccounts(t)
	setEnv(t)
	return startCaddy(t, basicConfig(f.URL, extra))
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// redactedMark is what the gateway writes in place of a credential it
// scrubs from a body, a header or a log line (a promise to operators).
const redactedMark = "[redacted by caddy-wechat]"

// statusAccounts is the metrics label of every account the admin status
// endpoint reports, in its order.
func statusAccounts(t testing.TB, g *runningCaddy) []string {
	t.Helper()
	r := get(t, "http://"+g.Admin+"/wechat/status")
	var s struct {
		Accounts []struct {
			Account string `json:"account"`
		} `json:"accounts"`
	}
	if err := json.Unmarshal(r.Body, &s); err != nil {
		t.Fatalf("status: %v %s", err, r.Body)
	}
	var labels []string
	for _, a := range s.Accounts {
		labels = append(labels, a.Account)
	}
	return labels
}

// accountRow is the part of a /wechat/status row tests read (the endpoint holds no token).
type accountRow struct {
	Account        string    `json:"account"`
	Shared         bool      `json:"store"`
	HasToken       bool      `json:"has_token"`
	Fetches        int64     `json:"fetches_today"`
	FetchedAt      time.Time `json:"fetched_at"`
	ExpiresAt      time.Time `json:"expires_at"`
	CeilingReached bool      `json:"ceiling_reached"`
	StoreDown      bool      `json:"store_down"`
}

// onlyAccountRow is the status row of the one account g runs.
func onlyAccountRow(t testing.TB, g *runningCaddy) accountRow {
	t.Helper()
	r := get(t, "http://"+g.Admin+"/wechat/status")
	var s struct {
		Accounts []accountRow `json:"accounts"`
	}
	if err := json.Unmarshal(r.Body, &s); err != nil {
		t.Fatalf("status: %v %s", err, r.Body)
	}
	if len(s.Accounts) != 1 {
		t.Fatalf("%d accounts in the status, want 1: %s", len(s.Accounts), r.Body)
	}
	return s.Accounts[0]
}

// siteConfig is one site whose body is given, with the harness's globals.
func siteConfig(body string) string {
	return `{
	admin 127.0.0.1:%[2]d
	log {
		output file %[3]s
		level DEBUG
	}
}
http://127.0.0.1:%[1]d {
` + body + `
}
`
}
