package wechatcmd_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-wechat/wechat"
	"github.com/caddy-wechat/wechat/fakewechat"
	"github.com/caddy-wechat/wechat/internal/testserver"
	"github.com/caddy-wechat/wechat/wechatcmd"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

const (
	appID      = "wxdoctor0000000001"
	secret     = "doctor-secret-0123456789abcdef01"
	corpID     = "wwdoctor000000001"
	corpSecret = "corp-secret-0123456789abcdef0123"
	compAppID  = "wxdoctorcomponent1"
	compSecret = "component-secret-0123456789abcdef"
)

// fake is the fake WeChat (official account, WeCom corp and component at
// once) with a Date header a test can skew.
type fake struct {
	*fakewechat.Server
	URL  string
	mu   sync.Mutex
	skew time.Duration
}

func newFake(t *testing.T) *fake {
	f := &fake{Server: fakewechat.New(fakewechat.Options{AppID: appID, Secret: secret, CorpID: corpID,
		CorpSecrets: map[string]string{"app": corpSecret},
		Component:   fakewechat.ComponentOptions{AppID: compAppID, Secret: compSecret, Token: "cbtoken", EncodingAESKey: strings.Repeat("k", 43)}})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		skew := f.skew
		f.mu.Unlock()
		if skew != 0 {
			w.Header().Set("Date", time.Now().Add(skew).UTC().Format(http.TimeFormat))
		}
		f.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func doctor(t *testing.T, caddyfile string) (int, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(p, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := wechatcmd.Doctor(&out, p, "caddyfile")
	t.Logf("caddy wechat doctor:\n%s", out.String())
	return code, out.String()
}

func setEnv(t *testing.T) {
	t.Setenv("DOCTOR_SECRET", secret)
	t.Setenv("DOCTOR_CORPSECRET", corpSecret)
	t.Setenv("DOCTOR_COMP_SECRET", compSecret)
}

// site is a config with one account of each kind against the fake;
// extra goes into the official account's block.
func site(f *fake, extra string) string {
	return `:0 {
	handle /jssdk {
		wechat_jssdk {
			appid ` + appID + `
			secret {env.DOCTOR_SECRET}
			upstream ` + f.URL + `
			` + extra + `
		}
	}
	handle /mp/* {
		wechat {
			appid ` + appID + `
			secret {env.DOCTOR_SECRET}
			upstream ` + f.URL + `
			` + extra + `
		}
	}
	handle /classic/* {
		wechat {
			appid ` + appID + `
			secret {env.DOCTOR_SECRET}
			token_api classic
			upstream ` + f.URL + `
		}
	}
	handle /work/* {
		wechat {
			corpid ` + corpID + `
			corpsecret {env.DOCTOR_CORPSECRET}
			upstream ` + f.URL + `
		}
	}
	handle {
		wechat_component {
			appid ` + compAppID + `
			secret {env.DOCTOR_COMP_SECRET}
			upstream ` + f.URL + `
		}
	}
}
`
}

func lineOf(out, prefix, subject, check string) string {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == prefix && strings.Contains(l, subject) && strings.Contains(l, check) {
			return l
		}
	}
	return ""
}

// A healthy config: every check passes, one token fetch per account from
// endpoints that retire nothing (no classic fetch, no force_refresh), a
// store that answers, the clock; no secret or token printed.
func TestDoctorHealthy(t *testing.T) {
	setEnv(t)
	f := newFake(t)
	mc := testserver.Memcached(t)
	rd := testserver.Redis(t)
	cfg := strings.Replace(site(f, "memcache "+mc.Addr), "corpsecret {env.DOCTOR_CORPSECRET}",
		"corpsecret {env.DOCTOR_CORPSECRET}\n\t\t\tstore redis {\n\t\t\t\taddress "+rd.Addr+"\n\t\t\t}", 1)
	code, out := doctor(t, cfg)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, c := range [][3]string{
		{"ok", "config", "adapts"},
		{"ok", "wechat " + appID, "placeholders: 1 resolve ({env.DOCTOR_SECRET})"},
		{"ok", "wechat " + appID, "token: fetched, expires in 2h0m0s (POST /cgi-bin/stable_token"},
		{"ok", "wechat " + appID, "a stable fetch leaves alone"},
		{"ok", "wechat " + appID, "store memcache: answers"},
		{"ok", "wechat " + appID, "domain 127.0.0.1"},
		{"ok", "wecom " + corpID, "token: fetched, expires in 2h0m0s (GET /cgi-bin/gettoken"},
		{"ok", "wecom " + corpID, "store redis: answers"},
		{"skip", "component " + compAppID, "token"},
		{"warn", "component " + compAppID, "store: none"},
		{"ok", "clock", "within a minute"},
	} {
		if lineOf(out, c[0], c[1], c[2]) == "" {
			t.Errorf("no line %q", c)
		}
	}
	if strings.Contains(out, "FAIL") {
		t.Error("a check failed")
	}
	if n := strings.Count(out, "token: fetched"); n != 3 {
		t.Errorf("%d token lines, want 3 (stable, classic's stable check, WeCom; jssdk is the stable account)", n)
	}
	if f.Fetches("classic") != 0 || f.Fetches("stable_force") != 0 {
		t.Errorf("the doctor retired a token: classic %d, force_refresh %d", f.Fetches("classic"), f.Fetches("stable_force"))
	}
	if f.Fetches("stable") != 2 || f.Fetches("work") != 1 {
		t.Errorf("fetches: stable %d, work %d; want 2 and 1", f.Fetches("stable"), f.Fetches("work"))
	}
	for _, s := range []string{secret, corpSecret, compSecret, f.CurrentStable()} {
		if strings.Contains(out, s) {
			t.Errorf("the doctor printed a credential (%.6s…)", s)
		}
	}
}

// Each WeChat errcode of the token endpoint in words, 40164 with the IP.
func TestDoctorTokenErrcodes(t *testing.T) {
	setEnv(t)
	f := newFake(t)
	for _, c := range []struct {
		code int
		want string
	}{
		{40164, "errcode 40164: add " + fakewechat.WhitelistIP + " to the account's IP whitelist"},
		{40125, "errcode 40125: wrong secret: fix secret"},
		{40013, "errcode 40013: wrong appid: fix appid"},
		{40243, "errcode 40243: the secret is frozen: unfreeze it"},
		{89503, "errcode 89503: this call needs the admin's confirmation"},
	} {
		t.Run(fmt.Sprint(c.code), func(t *testing.T) {
			f.FailTokens(c.code, "")
			defer f.FailTokens(0, "")
			code, out := doctor(t, site(f, ""))
			if code != 1 || lineOf(out, "FAIL", "wechat "+appID, c.want) == "" {
				t.Fatalf("exit %d; want a FAIL line with %q", code, c.want)
			}
			if strings.Contains(out, "rid:") || strings.Contains(out, secret) {
				t.Error("a rid or the secret in the output")
			}
		})
	}
}

// The other failures: a placeholder that resolves to nothing, a domain
// that does not answer, a store that does not answer, a clock five
// minutes off, and a config that does not adapt.
func TestDoctorFailures(t *testing.T) {
	setEnv(t)
	f := newFake(t)
	dead := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	t.Run("placeholder", func(t *testing.T) {
		os.Unsetenv("DOCTOR_UNSET")
		code, out := doctor(t, strings.Replace(site(f, ""), "corpsecret {env.DOCTOR_CORPSECRET}", "corpsecret {env.DOCTOR_UNSET}", 1))
		if code != 1 || lineOf(out, "FAIL", "wecom "+corpID, "placeholders: {env.DOCTOR_UNSET} resolve to nothing") == "" {
			t.Fatalf("exit %d", code)
		}
		if lineOf(out, "ok", "wechat "+appID, "token: fetched") == "" {
			t.Error("the other accounts were not checked")
		}
	})
	t.Run("domain", func(t *testing.T) {
		code, out := doctor(t, strings.ReplaceAll(site(f, ""), f.URL, "http://"+dead()))
		if code != 1 || lineOf(out, "FAIL", "wechat "+appID, "does not answer") == "" || lineOf(out, "skip", "wechat "+appID, "token: no domain answers") == "" {
			t.Fatalf("exit %d", code)
		}
	})
	t.Run("unresolvable", func(t *testing.T) {
		code, out := doctor(t, strings.ReplaceAll(site(f, ""), f.URL, "https://wechat-doctor.invalid"))
		if code != 1 || lineOf(out, "FAIL", "wechat "+appID, "does not resolve") == "" {
			t.Fatalf("exit %d", code)
		}
	})
	t.Run("store", func(t *testing.T) {
		code, out := doctor(t, site(f, "memcache "+dead()+"\n\t\t\tmemcache_timeout 200ms"))
		if code != 1 || lineOf(out, "FAIL", "wechat "+appID, "store memcache: does not answer") == "" {
			t.Fatalf("exit %d", code)
		}
	})
	t.Run("caddy storage", func(t *testing.T) {
		// `store storage` uses Caddy's storage: the config's, read where
		// the running Caddy would read it.
		dir := t.TempDir()
		code, out := doctor(t, "{\n\tstorage file_system "+dir+"\n}\n"+site(f, "store storage"))
		if code != 0 || lineOf(out, "ok", "wechat "+appID, "store storage: answers") == "" {
			t.Fatalf("exit %d", code)
		}
	})
	t.Run("clock", func(t *testing.T) {
		f.mu.Lock()
		f.skew = -5 * time.Minute
		f.mu.Unlock()
		defer func() { f.mu.Lock(); f.skew = 0; f.mu.Unlock() }()
		code, out := doctor(t, site(f, ""))
		// The Date header has whole seconds: 5m0s or 5m1s.
		if line := lineOf(out, "FAIL", "clock", "ahead of"); code != 1 || !strings.Contains(line, "5m0s ahead") && !strings.Contains(line, "5m1s ahead") {
			t.Fatalf("exit %d", code)
		}
	})
	t.Run("adapt", func(t *testing.T) {
		code, out := doctor(t, ":0 {\n\twechat {\n\t\tappid x\n\t\tsecert {env.S}\n\t}\n}\n")
		if code != 1 || lineOf(out, "FAIL", "config", "did you mean secret") == "" {
			t.Fatalf("exit %d", code)
		}
	})
}

// `caddy wechat` is registered with its two subcommands; status without
// a running admin API says so and fails.
func TestCommandRegistered(t *testing.T) {
	cmd, ok := caddycmd.Commands()["wechat"]
	if !ok || cmd.CobraFunc == nil {
		t.Fatal("no caddy wechat command")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var out bytes.Buffer
	if code, err := wechatcmd.Status(&out, addr); code != 1 || err == nil || !strings.Contains(err.Error(), "admin API at "+addr) {
		t.Fatalf("status with no admin API: %d %v", code, err)
	}
}
