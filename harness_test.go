package wechat

// The root's test harness: the fake WeChat behind an httptest server,
// and the Caddyfile adapter. Tests that run a whole Caddy live in
// integration/, which has the full harness.

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

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

// adapt runs the Caddyfile adapter, failing on any warning but the
// formatting one: the Caddyfile tests here adapt, they never load.
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
