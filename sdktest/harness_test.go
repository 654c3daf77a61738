// Package sdktest runs real WeChat SDKs, unmodified except for where they
// send requests, through a real Caddy with the wechat module in front of
// the fake WeChat. It is a module of its own so that the SDKs never become
// dependencies of the gateway.
package sdktest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
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

	wechat "github.com/caddy-wechat/wechat"
	"github.com/caddy-wechat/wechat/fakewechat"
)

const (
	appID  = "wx00000000sdktest01"
	secret = "sdktest-secret-not-a-real-one-00"
	// What the SDKs are configured with: they need some secret, and it
	// must never be sent anywhere.
	sdkSecret = "sdk-dummy-secret-goes-nowhere"
)

// seen is one request as the fake received it.
type seen struct {
	Method, Host, Path, RawQuery string
	Header                       http.Header
	Body                         []byte
	Errcode                      int
}

// fake is the fake WeChat behind a recorder, and a control server that
// the Node test uses to revoke tokens mid-run.
type fake struct {
	*fakewechat.Server
	Addr    string // host:port, a fixed upstream address for the gateway
	Control string // base URL of the control server

	mu   sync.Mutex
	reqs []seen
}

func startFake(t *testing.T) *fake {
	t.Helper()
	f := &fake{Server: fakewechat.New(fakewechat.Options{AppID: appID, Secret: secret})}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.Addr = strings.TrimPrefix(srv.URL, "http://")
	ctl := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/revoke" {
			f.RevokeAll()
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(ctl.Close)
	f.Control = ctl.URL
	return f
}

// serve records the request, lets the fake answer into a buffer, and for
// uploads adds the fields a real upload answer has (the fake echoes).
func (f *fake) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := httptest.NewRecorder()
	f.Server.ServeHTTP(rec, r)
	out := rec.Body.Bytes()
	var ans map[string]any
	_ = json.Unmarshal(out, &ans)
	code, _ := ans["errcode"].(float64)
	if code == 0 && ans != nil {
		switch {
		case strings.Contains(r.URL.Path, "/media/upload"):
			// media_id names the uploaded file's content, so the test
			// can tell the file arrived whole.
			ans = map[string]any{"type": r.URL.Query().Get("type"), "media_id": "MEDIA_" + fileSHA(r, body)[:16], "created_at": time.Now().Unix()}
		case r.URL.Path == "/cgi-bin/qrcode/create":
			// WeChat's answer has no errmsg, and SDKs check for one.
			ans = map[string]any{"ticket": "QR_TICKET", "expire_seconds": 3600, "url": "http://weixin.qq.com/q/x"}
		}
		out, _ = json.Marshal(ans)
		rec.Header().Del("Content-Length")
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, seen{r.Method, r.Host, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body, int(code)})
	f.mu.Unlock()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(out)
}

// fileSHA is the hex SHA-256 of the first file in a multipart body.
func fileSHA(r *http.Request, body []byte) string {
	_, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			return strings.Repeat("0", 64)
		}
		if p.FileName() != "" {
			h := sha256.New()
			io.Copy(h, p)
			return hex.EncodeToString(h.Sum(nil))
		}
	}
}

func (f *fake) all() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.reqs...)
}

// checkRequests asserts what reached the fake: each API call carried
// exactly one access_token, the gateway's, and no request held the
// placeholder or the SDK's secret anywhere. It returns the API paths seen.
func (f *fake) checkRequests(t *testing.T) map[string]int {
	t.Helper()
	paths := map[string]int{}
	for _, r := range f.all() {
		raw := r.Method + " " + r.Path + "?" + r.RawQuery + "\n" + fmt.Sprint(r.Header) + "\n" + string(r.Body)
		if strings.Contains(strings.ToUpper(raw), wechat.PlaceholderPrefix) {
			t.Errorf("a placeholder reached WeChat: %s", raw)
		}
		if strings.Contains(raw, sdkSecret) {
			t.Errorf("the SDK's secret reached WeChat: %s %s", r.Method, r.Path)
		}
		switch r.Path {
		case "/cgi-bin/token", "/cgi-bin/stable_token", "/cgi-bin/gettoken":
			continue // the gateway's own fetch, with its own secret
		}
		q, _ := url.ParseQuery(r.RawQuery)
		if toks := q["access_token"]; len(toks) != 1 || toks[0] == "" {
			t.Errorf("%s %s: access_token %q, want exactly one", r.Method, r.Path, toks)
		}
		paths[r.Path]++
	}
	return paths
}

// gateway is a running Caddy: one plain-HTTP site, and TLS sites (Caddy's
// internal CA) for 127.0.0.1 and the WeChat host names on the HTTPS port,
// all in front of the fake at a fixed address.
type gateway struct {
	HTTP    string // 127.0.0.1:port, plain HTTP
	HTTPS   string // 127.0.0.1:port, TLS for 127.0.0.1, api. and file.api.weixin.qq.com
	Admin   string
	RootCA  string // Caddy's local root certificate
	LogFile string
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// gatewayConfig is the recipe from the README ("Using your SDK"), with
// loopback ports. %[1]d HTTP port, %[2]d HTTPS port, %[3]d admin port,
// %[4]s data dir, %[5]s log file, %[6]s fake's host:port.
const gatewayConfig = `{
	admin 127.0.0.1:%[3]d
	storage file_system %[4]s
	skip_install_trust
	http_port %[1]d
	https_port %[2]d
	auto_https disable_redirects
	log {
		output file %[5]s
		level INFO
	}
}

(account) {
	wechat {
		appid {env.SDKTEST_APPID}
		secret {env.SDKTEST_SECRET}
		upstream http://%[6]s
	}
}

http://127.0.0.1, http://file.api.weixin.qq.com {
	import account
}

https://127.0.0.1, https://api.weixin.qq.com, https://file.api.weixin.qq.com {
	tls internal
	import account
}
`

func startGateway(t *testing.T, f *fake) *gateway {
	t.Helper()
	t.Setenv("SDKTEST_APPID", appID)
	t.Setenv("SDKTEST_SECRET", secret)
	dir := t.TempDir()
	hp, sp, ap := freePort(t), freePort(t), freePort(t)
	g := &gateway{
		HTTP:    fmt.Sprintf("127.0.0.1:%d", hp),
		HTTPS:   fmt.Sprintf("127.0.0.1:%d", sp),
		Admin:   fmt.Sprintf("127.0.0.1:%d", ap),
		RootCA:  filepath.Join(dir, "data", "pki", "authorities", "local", "root.crt"),
		LogFile: filepath.Join(dir, "caddy.log"),
	}
	text := fmt.Sprintf(gatewayConfig, hp, sp, ap, filepath.Join(dir, "data"), g.LogFile, f.Addr)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { caddy.Stop() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(g.RootCA); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no root certificate at %s", g.RootCA)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return g
}

// metric returns the sum of a counter's samples whose labels contain
// every one of match, from Caddy's /metrics.
func (g *gateway) metric(t *testing.T, name string, match ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + g.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(line, m)
		}
		var v float64
		if i := strings.LastIndexByte(line, ' '); ok && i > 0 {
			fmt.Sscan(line[i+1:], &v)
			sum += v
		}
	}
	return sum
}

// checkReplay asserts that the fake rejected the revoked token, that the
// gateway replayed every such request successfully, and that no client got
// a token error.
func (g *gateway) checkReplay(t *testing.T, f *fake) {
	t.Helper()
	rejected := f.Rejected(40001) + f.Rejected(42001) + f.Rejected(40014)
	if rejected == 0 {
		t.Error("the fake never rejected a token: the replay was not exercised")
	}
	if n := g.metric(t, "caddy_wechat_requests_total", `result="token_error"`); n != 0 {
		t.Errorf("%v token errors reached a client", n)
	}
	if n := g.metric(t, "caddy_wechat_invalid_token_retries_total", `outcome="ok"`); n < 1 {
		t.Errorf("no successful replay recorded (%v)", n)
	}
	for _, r := range f.all() {
		if r.Errcode == 40001 && r.Path == "/cgi-bin/token" {
			t.Errorf("the gateway's own token fetch failed: %+v", r)
		}
	}
}
