// Package integration runs whole Caddy servers with the module loaded.
package integration

import (
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-wechat/wechat"
	"github.com/caddy-wechat/wechat/fakewechat"
)

// The accounts of the push tests. The keys are made up (43 characters).
const (
	pushToken  = "pushTokenForTests01"
	pushAESKey = "kW3pN8sQ2vX5zB7dF9hJ1lM4nP6rT8vY0aC2eG4iK6m"
	oaAppID    = "wx00000000push0001"
	oaOrig     = "gh_000000push01"
	mpAppID    = "wx00000000push0002"
	mpOrig     = "gh_000000push02"
	corpID     = "ww00000000push0003"
	agentID    = "1000002"
	openID     = "oPushUser000000000000000001"
)

// pushApp is the app behind the gateway: it replies to text messages
// with a passive reply, and records what it saw.
type pushApp struct {
	srv   *httptest.Server
	calls atomic.Int32
	delay time.Duration

	mu   sync.Mutex
	seen []appRequest
}

type appRequest struct {
	Path   string
	Query  string
	Header http.Header
	Body   string
}

func newPushApp(t *testing.T) *pushApp {
	a := &pushApp{}
	a.srv = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *pushApp) serve(w http.ResponseWriter, r *http.Request) {
	a.calls.Add(1)
	b, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.seen = append(a.seen, appRequest{Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: string(b)})
	a.mu.Unlock()
	if a.delay > 0 {
		time.Sleep(a.delay)
	}
	if r.URL.Path == "/fail" {
		http.Error(w, "the app is down", http.StatusInternalServerError)
		return
	}
	if strings.HasPrefix(strings.TrimSpace(string(b)), "{") {
		io.WriteString(w, "success") // a mini program answers through the customer-service API
		return
	}
	var m struct {
		ToUserName, FromUserName, MsgType, Content string
	}
	if xml.Unmarshal(b, &m) != nil || m.MsgType != "text" {
		io.WriteString(w, "success")
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	fmt.Fprintf(w, "<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[you said: %s]]></Content></xml>",
		m.FromUserName, m.ToUserName, time.Now().Unix(), m.Content)
}

func (a *pushApp) requests() []appRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]appRequest(nil), a.seen...)
}

// pushGateway is a Caddy with wechat_push in front of the app.
type pushGateway struct {
	A, B  string // base URLs of two servers (two instances when they share a store)
	Admin string
	Log   string
	base  map[string]float64 // /metrics when the config was loaded
}

// freePorts returns n distinct free ports: the listeners are held until
// all are chosen, so no two are the same.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// pushConfig: server A holds every kind of account; A and B both hold
// /cluster, an account whose marks live in the store given by
// clusterStore (a store block, or "" for none). handle_path chooses the
// account, as a site with several accounts would.
const pushConfig = `{
	admin 127.0.0.1:%[3]d
	storage file_system %[4]s
	auto_https off
	log {
		output file %[5]s
		level DEBUG
	}
}

(oa) {
	wechat_push {
		appid {env.PT_OA_APPID}
		token {env.PT_TOKEN}
		encoding_aes_key {env.PT_AES_KEY}
		original_id ` + oaOrig + `
		%[7]s
	}
}

http://127.0.0.1:%[1]d {
	handle /oa {
		import oa
		reverse_proxy %[6]s
	}
	handle /fail {
		import oa
		rewrite * /fail
		reverse_proxy %[6]s
	}
	handle /plain {
		wechat_push {
			appid {env.PT_OA_APPID}
			token {env.PT_TOKEN}
			mode plain
		}
		reverse_proxy %[6]s
	}
	handle /mp {
		wechat_push {
			kind mini_program
			format json
			appid {env.PT_MP_APPID}
			token {env.PT_TOKEN}
			encoding_aes_key {env.PT_AES_KEY}
		}
		reverse_proxy %[6]s
	}
	handle /wecom {
		wechat_push {
			kind wecom
			corpid {env.PT_CORPID}
			agent_id ` + agentID + `
			token {env.PT_TOKEN}
			encoding_aes_key {env.PT_AES_KEY}
		}
		reverse_proxy %[6]s
	}
	handle /cluster {
		import oa
		reverse_proxy %[6]s
	}
}

http://127.0.0.1:%[2]d {
	handle /cluster {
		import oa
		reverse_proxy %[6]s
	}
}
`

// startPush loads the config (store: the subdirective line for /cluster
// and /oa, or "") and waits for both servers.
func startPush(t *testing.T, app *pushApp, store string) *pushGateway {
	t.Helper()
	t.Setenv("PT_OA_APPID", oaAppID)
	t.Setenv("PT_MP_APPID", mpAppID)
	t.Setenv("PT_CORPID", corpID)
	t.Setenv("PT_TOKEN", pushToken)
	t.Setenv("PT_AES_KEY", pushAESKey)
	dir := t.TempDir()
	ps := freePorts(t, 3)
	pa, pb, ad := ps[0], ps[1], ps[2]
	g := &pushGateway{A: fmt.Sprintf("http://127.0.0.1:%d", pa), B: fmt.Sprintf("http://127.0.0.1:%d", pb),
		Admin: fmt.Sprintf("http://127.0.0.1:%d", ad), Log: filepath.Join(dir, "caddy.log")}
	text := fmt.Sprintf(pushConfig, pa, pb, ad, filepath.Join(dir, "data"), g.Log, strings.TrimPrefix(app.srv.URL, "http://"), store)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	for _, u := range []string{g.A, g.B} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.Dial("tcp", strings.TrimPrefix(u, "http://"))
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never listened", u)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	g.base = g.scrape(t)
	return g
}

// scrape reads Caddy's /metrics as series -> value.
func (g *pushGateway) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get(g.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if strings.HasPrefix(line, "#") || i <= 0 {
			continue
		}
		var v float64
		fmt.Sscan(line[i+1:], &v)
		out[line[:i]] = v
	}
	return out
}

// metric sums a counter's samples whose labels contain all of match,
// counted since startPush: the collectors are the process's, and outlive
// each test's config.
func (g *pushGateway) metric(t *testing.T, name string, match ...string) float64 {
	t.Helper()
	var sum float64
	for series, v := range g.scrape(t) {
		if !strings.HasPrefix(series, name+"{") {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(series, m)
		}
		if ok {
			sum += v - g.base[series]
		}
	}
	return sum
}

// noSecrets fails if the token or the key appears in what the app saw,
// in Caddy's log, in /config/ or in /metrics.
func (g *pushGateway) noSecrets(t *testing.T, app *pushApp) {
	t.Helper()
	var all strings.Builder
	for _, r := range app.requests() {
		fmt.Fprintf(&all, "%s?%s %v %s\n", r.Path, r.Query, r.Header, r.Body)
	}
	logb, _ := os.ReadFile(g.Log)
	all.Write(logb)
	for _, p := range []string{"/config/", "/metrics"} {
		resp, err := http.Get(g.Admin + p)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			all.Write(b)
		}
	}
	for _, s := range []string{pushToken, pushAESKey} {
		if strings.Contains(all.String(), s) {
			t.Errorf("a secret reached the app, the log, /config/ or /metrics")
		}
	}
}

func pusher(kind string) *fakewechat.Pusher {
	switch kind {
	case "mp":
		return &fakewechat.Pusher{Account: fakewechat.PushAccount{Kind: "mini_program", Token: pushToken, EncodingAESKey: pushAESKey, AppID: mpAppID, OriginalID: mpOrig, JSON: true}}
	case "wecom":
		return &fakewechat.Pusher{Account: fakewechat.PushAccount{Kind: "wecom", Token: pushToken, EncodingAESKey: pushAESKey, AppID: corpID, AgentID: agentID}}
	case "plain":
		return &fakewechat.Pusher{Account: fakewechat.PushAccount{Token: pushToken, AppID: oaAppID, Mode: "plain", OriginalID: oaOrig}}
	}
	return &fakewechat.Pusher{Account: fakewechat.PushAccount{Token: pushToken, EncodingAESKey: pushAESKey, AppID: oaAppID, OriginalID: oaOrig}}
}
