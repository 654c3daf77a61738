package integration

// The open platform's harness: the fake open platform behind a server that
// can reject chosen tokens, and one Caddy with wechat_component and
// wechat_component_callback in front of it. startComponent is the one
// place the four credentials are set and the fake and Caddy started.

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat"
	"github.com/caddy-wechat/wechat/fakewechat"
	"github.com/caddy-wechat/wechat/internal/testserver"
)

const (
	testComponentAppID  = "wxcomponent0000001"
	testComponentSecret = "component-secret-0123456789abcdef"
	testComponentToken  = "callbacktoken0001"
	testComponentAESKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
)

// componentFake is the fake open platform behind a server that can
// reject chosen tokens and notes whether the authorizer header leaked.
type componentFake struct {
	*fakewechat.Server
	URL        string
	sawHeader  atomic.Bool
	lastQuery  atomic.Value // string: the raw query of the last request
	mu         sync.Mutex
	rejectToks map[string]bool
}

func newComponentFake(t testing.TB, rotateEvery int) *componentFake {
	t.Helper()
	f := &componentFake{rejectToks: map[string]bool{}, Server: fakewechat.New(fakewechat.Options{Component: fakewechat.ComponentOptions{
		AppID: testComponentAppID, Secret: testComponentSecret, Token: testComponentToken, EncodingAESKey: testComponentAESKey,
		RotateEvery: rotateEvery}})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(wechat.AuthorizerHeader) != "" {
			f.sawHeader.Store(true)
		}
		f.lastQuery.Store(r.URL.RawQuery)
		f.mu.Lock()
		bad := f.rejectToks[r.URL.Query().Get("access_token")]
		f.mu.Unlock()
		if bad {
			io.WriteString(w, `{"errcode":40001,"errmsg":"invalid credential rid: x"}`)
			return
		}
		f.Server.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *componentFake) reject(tok string) {
	f.mu.Lock()
	f.rejectToks[tok] = true
	f.mu.Unlock()
}

// componentConfig is one site with the callback at
// /wechat/component/callback and wechat_component for everything else.
func componentConfig(upstream string) string {
	return `{
	admin 127.0.0.1:%[2]d
	log {
		output file %[3]s
		level DEBUG
	}
}
http://127.0.0.1:%[1]d {` + callbackHandle("/wechat/component/callback", upstream, "") + `
	handle {
		wechat_component {
			appid {env.TEST_COMPONENT_APPID}
			secret {env.TEST_COMPONENT_SECRET}
			upstream ` + upstream + `
		}
	}
}
`
}

// callbackHandle is a site block's handle of path by the component's
// callback, with extra subdirectives (a store, a fetch_timeout).
func callbackHandle(path, upstream, extra string) string {
	return `
	handle ` + path + ` {
		wechat_component_callback {
			appid {env.TEST_COMPONENT_APPID}
			secret {env.TEST_COMPONENT_SECRET}
			token {env.TEST_COMPONENT_TOKEN}
			aes_key {env.TEST_COMPONENT_AES_KEY}
			upstream ` + upstream + `
			` + extra + `
		}
	}`
}

// startComponent starts cold: the component's credentials in the
// environment, a fresh fake open platform (rotating the refresh token
// every rotateEvery renewals, 0 never), and a Caddy running config(the
// fake's URL); nil config is componentConfig.
func startComponent(t testing.TB, rotateEvery int, config func(upstream string) string) (*componentFake, *runningCaddy) {
	t.Helper()
	resetAccounts(t)
	t.Setenv("TEST_COMPONENT_APPID", testComponentAppID)
	t.Setenv("TEST_COMPONENT_SECRET", testComponentSecret)
	t.Setenv("TEST_COMPONENT_TOKEN", testComponentToken)
	t.Setenv("TEST_COMPONENT_AES_KEY", testComponentAESKey)
	f := newComponentFake(t, rotateEvery)
	if config == nil {
		config = componentConfig
	}
	return f, startCaddy(t, config(f.URL))
}

// memcachedProc is a real memcached (internal/testserver: skipped locally
// and failed under CI when the binary is missing), plus FlushAll.
type memcachedProc struct {
	*testserver.Server
	t testing.TB
}

func startMemcached(t testing.TB) *memcachedProc {
	t.Helper()
	return &memcachedProc{Server: testserver.Memcached(t), t: t}
}

// FlushAll sends "flush_all" over a raw connection.
func (m *memcachedProc) FlushAll() {
	m.t.Helper()
	c, err := net.DialTimeout("tcp", m.Addr, time.Second)
	if err != nil {
		m.t.Fatalf("flush_all: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("flush_all\r\n")); err != nil {
		m.t.Fatalf("flush_all: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimRight(line, "\r\n") != "OK" {
		m.t.Fatalf("flush_all: %q, %v", line, err)
	}
}
