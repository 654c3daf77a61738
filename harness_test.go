package wechat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/caddy-wechat/wechat/caddykit"
	"github.com/caddy-wechat/wechat/fakewechat"
)

const (
	testAppID  = "wx00000000test0001"
	testSecret = "0123456789abcdef0123456789abcdef"
)

// The tests here run on the real clock and reject tokens fetched a moment
// ago; the minimum token age (tested in internal/credential on a fake
// clock) would keep those. Tests of the rule itself set min_token_age.
func init() { caddykit.DefaultMinTokenAge = -1 }

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

// startCaddy adapts caddyfile (with %[1]d = HTTP port, %[2]d = admin port,
// %[3]s = log file) and runs it in this process. Caddy is a process-wide
// singleton, so these tests do not run in parallel.
func startCaddy(t testing.TB, caddyfile string) *runningCaddy {
	t.Helper()
	skipIfFast(t)
	g := &runningCaddy{LogFile: filepath.Join(t.TempDir(), "caddy.log")}
	port, admin := freePort(t), freePort(t)
	g.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	g.Admin = fmt.Sprintf("127.0.0.1:%d", admin)
	loadCaddyfile(t, fmt.Sprintf(caddyfile, port, admin, g.LogFile))
	t.Cleanup(func() { caddy.Stop() })
	return g
}

// loadCaddyfile adapts and loads a config, failing the test on error.
func loadCaddyfile(t testing.TB, text string) {
	t.Helper()
	cfg, err := adapt(text)
	if err != nil {
		t.Fatalf("adapt: %v\n%s", err, text)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("load: %v", err)
	}
	// The old servers close their keep-alive connections; a request sent
	// on one of them as it closes would read EOF, which is Caddy's reload
	// and not what a test asserts. Clients reconnect, as real ones do.
	client.CloseIdleConnections()
}

func adapt(text string) ([]byte, error) {
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
		` + extra + `
	}
}
`
}

func setEnv(t testing.TB) {
	t.Setenv("TEST_WECHAT_APPID", testAppID)
	t.Setenv("TEST_WECHAT_SECRET", testSecret)
}

// resetAccounts stops any running config and checks that it released
// every account: a leftover would be a leaked refresher.
func resetAccounts(t testing.TB) {
	t.Helper()
	caddy.Stop()
	accounts.Range(func(k, _ any) bool {
		t.Fatalf("account %v still in the pool after stop", k)
		return false
	})
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

func get(t testing.TB, url string) result { return do(t, http.MethodGet, url, nil) }

// parallel runs f n times at once and waits.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); f(i) }()
	}
	wg.Wait()
}

// setup starts cold: a fresh fake WeChat, and one Caddy with one wechat
// account in front of it (extra adds subdirectives).
func setup(t testing.TB, extra string) (*fakeWeChat, *runningCaddy) {
	t.Helper()
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	return f, startCaddy(t, basicConfig(f.URL, extra))
}

func itoa(n int) string { return strconv.Itoa(n) }
