package prometheus

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
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

const (
	promAppID       = "wx00000000prom0001"
	promSecret      = "0123456789abcdef0123456789abcdef"
	promComponent   = "wxcomponentprom001"
	promCompSecret  = "component-secret-prom-0123456789"
	promCompToken   = "callbacktokenprom"
	promCompAESKey  = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	promMerchant    = "wxmerchantprom0001"
	promBadSecret   = "ffffffffffffffffffffffffffffffff"
	authorizerTokEP = "/cgi-bin/component/api_authorizer_token"
	authorizerInfo  = "/cgi-bin/component/api_get_authorizer_info"
)

// promFake is the fake WeChat (an account and a component) behind a
// wrapper that can answer 40001 to API calls and 61023 to authorizer
// renewals, for faults that the alerts are about.
type promFake struct {
	*fakewechat.Server
	URL           string
	rejectAPI     atomic.Bool
	failAuthorize atomic.Bool
}

func newPromFake(t *testing.T) *promFake {
	f := &promFake{Server: fakewechat.New(fakewechat.Options{AppID: promAppID, Secret: promSecret,
		Component: fakewechat.ComponentOptions{AppID: promComponent, Secret: promCompSecret, Token: promCompToken, EncodingAESKey: promCompAESKey}})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if f.failAuthorize.Load() && (p == authorizerTokEP || p == authorizerInfo) {
			io.WriteString(w, `{"errcode":61023,"errmsg":"refresh_token is invalid"}`)
			return
		}
		tokenPath := p == "/cgi-bin/token" || p == "/cgi-bin/stable_token" || strings.HasPrefix(p, "/cgi-bin/component/")
		if f.rejectAPI.Load() && !tokenPath {
			io.WriteString(w, `{"errcode":40001,"errmsg":"invalid credential rid: prom"}`)
			return
		}
		f.Server.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// promGateway is a running Caddy: three accounts (a healthy one on a
// durable store, one with a wrong secret and an unreachable store, one
// with a fetch ceiling of 1) and a component with its callback.
type promGateway struct {
	URL, Admin string
}

func startPromGateway(t *testing.T, f *promFake) *promGateway {
	t.Helper()
	port, admin, closed := testserver.FreePort(t), testserver.FreePort(t), testserver.FreePort(t)
	t.Setenv("ITEST_SECRET", promSecret)
	t.Setenv("ITEST_BAD_SECRET", promBadSecret)
	t.Setenv("ITEST_COMP_SECRET", promCompSecret)
	t.Setenv("ITEST_COMP_TOKEN", promCompToken)
	t.Setenv("ITEST_COMP_AES_KEY", promCompAESKey)
	dir := t.TempDir()
	account := func(secret, extra string) string {
		return "wechat {\n\t\t\tappid " + promAppID + "\n\t\t\tsecret {env." + secret + "}\n\t\t\tupstream " + f.URL + "\n\t\t\t" + extra + "\n\t\t}"
	}
	store := func(name string) string {
		return "store storage {\n\t\t\t\tstorage file_system {\n\t\t\t\t\troot " + filepath.Join(dir, name) + "\n\t\t\t\t}\n\t\t\t}"
	}
	comp := "appid " + promComponent + "\n\t\t\tsecret {env.ITEST_COMP_SECRET}\n\t\t\tupstream " + f.URL + "\n\t\t\t" + store("component")
	cfg := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	log {
		output file %s
		level INFO
	}
}
http://127.0.0.1:%d {
	handle_path /good/* {
		%s
	}
	handle_path /badsecret/* {
		%s
	}
	handle_path /ceiling/* {
		%s
	}
	handle /wechat/component/callback {
		wechat_component_callback {
			%s
			token {env.ITEST_COMP_TOKEN}
			aes_key {env.ITEST_COMP_AES_KEY}
		}
	}
	handle {
		wechat_component {
			%s
		}
	}
}
`, admin, filepath.Join(dir, "caddy.log"), port,
		account("ITEST_SECRET", store("good")),
		account("ITEST_BAD_SECRET", fmt.Sprintf("memcache 127.0.0.1:%d", closed)),
		account("ITEST_SECRET", "fetch_ceiling 1"),
		comp, comp)
	js, warns, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapt: %v\n%s", err, cfg)
	}
	for _, w := range warns {
		if !strings.Contains(w.Message, "formatted") {
			t.Fatalf("adapt warning: %s", w.Message)
		}
	}
	if err := caddy.Load(js, true); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { caddy.Stop() })
	return &promGateway{URL: fmt.Sprintf("http://127.0.0.1:%d", port), Admin: fmt.Sprintf("127.0.0.1:%d", admin)}
}

var promClient = &http.Client{Timeout: 20 * time.Second}

// call sends one request and returns the status and WeChat's errcode.
func promCall(t *testing.T, method, u string, body string) (int, int) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	resp, err := promClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	var ans struct {
		Errcode int `json:"errcode"`
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &ans)
	return resp.StatusCode, ans.Errcode
}

// prometheusServer is a real Prometheus on loopback with its data in a
// temporary directory, scraping every second.
type prometheusServer struct{ URL string }

func startPrometheus(t *testing.T, target, rules string) *prometheusServer {
	t.Helper()
	bin := testserver.LookPath(t, "prometheus", "prometheus")
	dir := t.TempDir()
	port := testserver.FreePort(t)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
rule_files:
  - %s
scrape_configs:
  - job_name: caddy
    static_configs:
      - targets: ['%s']
`, rules, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})
	p := &prometheusServer{URL: fmt.Sprintf("http://127.0.0.1:%d", port)}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := promClient.Get(p.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// api calls Prometheus's HTTP API and decodes its data.
func (p *prometheusServer) api(t *testing.T, path string, q url.Values, data any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+path+"?"+q.Encode(), nil)
	resp, err := promClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || env.Status != "success" {
		t.Fatalf("prometheus %s %v: %s %s (%v)", path, q, env.Status, env.Error, err)
	}
	if err := json.Unmarshal(env.Data, data); err != nil {
		t.Fatal(err)
	}
}

// series are the label sets Prometheus holds for a selector.
func (p *prometheusServer) series(t *testing.T, match string) []map[string]string {
	var out []map[string]string
	p.api(t, "/api/v1/series", url.Values{"match[]": {match}}, &out)
	return out
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (p *prometheusServer) query(t *testing.T, expr string) []promSample {
	var out struct {
		ResultType string       `json:"resultType"`
		Result     []promSample `json:"result"`
	}
	p.api(t, "/api/v1/query", url.Values{"query": {expr}}, &out)
	return out.Result
}

// waitFor polls until f holds, or fails the test after d.
func promWaitFor(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
