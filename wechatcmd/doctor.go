package wechatcmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/statusview"
	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
)

// maxSkew is how far this machine's clock may be from WeChat's: the
// callback refuses pushes whose timestamp is older than a few minutes.
const maxSkew = time.Minute

// Doctor checks every WeChat account of the config and prints one line
// per check: "ok", "warn", "skip" or "FAIL", what was checked, and in
// words what to do. It returns the exit status: 1 if a check failed.
// It prints no token, ticket or secret, and spends no quota that
// matters: one normal-mode stable_token fetch (or WeCom gettoken) per
// account, which returns the token the gateway already holds.
func Doctor(w io.Writer, configFile, adapter string) int {
	d := &doctor{w: w, rt: http.DefaultTransport.(*http.Transport).Clone(), domains: map[string]*domainResult{}}
	d.run(configFile, adapter)
	if d.failed {
		return 1
	}
	return 0
}

type doctor struct {
	w       io.Writer
	rt      *http.Transport
	failed  bool
	domains map[string]*domainResult // by base URL: each is dialled once
	date    time.Time                // WeChat's clock, from the first answer's Date header
	dateAt  time.Time                // our clock when it was read
	dateOf  string
	storage json.RawMessage // the config's Caddy storage, for `store storage`
}

type domainResult struct {
	ok     bool
	detail string
}

func (d *doctor) line(verdict, subject, check, detail string) {
	if verdict == "FAIL" {
		d.failed = true
	}
	fmt.Fprintf(d.w, "%-4s  %s  %s: %s\n", verdict, subject, check, detail)
}

// account is an account's JSON, as the transport, wechat_jssdk's
// "account", the component transport and the callback handler spell it.
type account struct {
	AppID           string          `json:"appid"`
	Secret          string          `json:"secret"`
	TokenAPI        string          `json:"token_api"`
	TokenEndpoints  []string        `json:"token_endpoints"`
	Upstreams       []string        `json:"upstreams"`
	Store           json.RawMessage `json:"store"`
	Memcache        []string        `json:"memcache"`
	MemcachePrefix  string          `json:"memcache_prefix"`
	MemcacheTimeout caddy.Duration  `json:"memcache_timeout"`

	kind string         // "wechat", "wecom" or "component"
	raw  map[string]any // for the placeholders
}

func (d *doctor) run(configFile, adapter string) {
	cfg, file, used, err := caddycmd.LoadConfig(configFile, adapter)
	if err != nil {
		d.line("FAIL", "config", "adapts", err.Error())
		return
	}
	if file == "" || len(cfg) == 0 {
		d.line("FAIL", "config", "adapts", "no config file: give --config")
		return
	}
	if used == "" {
		used = "json"
	}
	d.line("ok", "config", "adapts", file+" ("+used+")")
	var top struct {
		Storage json.RawMessage `json:"storage"`
	}
	json.Unmarshal(cfg, &top)
	d.storage = top.Storage
	accts, err := findAccounts(cfg)
	if err != nil {
		d.line("FAIL", "config", "accounts", err.Error())
		return
	}
	if len(accts) == 0 {
		d.line("FAIL", "config", "accounts", "no wechat, wechat_jssdk, WeCom or component account in the config")
		return
	}
	for _, a := range accts {
		d.check(a)
	}
	d.clock()
}

// findAccounts walks the config for the gateway's account objects, each
// once (wechat and wechat_jssdk of one account are one).
func findAccounts(cfg []byte) ([]*account, error) {
	var root any
	if err := json.Unmarshal(cfg, &root); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []*account
	var walk func(v any)
	add := func(m map[string]any, kind string) {
		b, _ := json.Marshal(m)
		a := &account{kind: kind, raw: m}
		if json.Unmarshal(b, a) != nil {
			return
		}
		if kind == "wechat" && a.TokenAPI == credential.APIWork {
			a.kind = "wecom"
		}
		key := fmt.Sprintf("%s|%s|%s|%s|%v|%v|%s|%v", a.kind, a.AppID, a.Secret, a.TokenAPI, a.TokenEndpoints, a.Upstreams, a.Store, a.Memcache)
		if !seen[key] {
			seen[key] = true
			out = append(out, a)
		}
	}
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			switch {
			case v["protocol"] == "wechat":
				add(v, "wechat")
			case v["handler"] == "wechat_jssdk":
				if m, ok := v["account"].(map[string]any); ok {
					add(m, "wechat")
				}
			case v["protocol"] == "wechat_component", v["handler"] == "wechat_component_callback":
				add(v, "component")
			}
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys) // config order is lost in a map; be stable at least
			for _, k := range keys {
				walk(v[k])
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(root)
	return out, nil
}

var placeholderRE = regexp.MustCompile(`\{(env|file)\.[^{}]+\}`)

func (d *doctor) check(a *account) {
	repl := caddy.NewReplacer()
	appid := strings.TrimSpace(repl.ReplaceKnown(a.AppID, ""))
	secret := strings.TrimSpace(repl.ReplaceKnown(a.Secret, ""))
	if appid == "" {
		appid = a.AppID
	}
	subject := a.kind + " " + appid
	if a.kind == "wechat" {
		api := a.TokenAPI
		if api == "" {
			api = credential.APIStable
		}
		subject += " (" + api + ")"
	}

	// Placeholders: every {env.*} and {file.*} of the account's config,
	// its store's included, must resolve to something. Their values are
	// never printed.
	var phs []string
	collectStrings(a.raw, func(s string) { phs = append(phs, placeholderRE.FindAllString(s, -1)...) })
	phs = uniq(phs)
	var empty []string
	for _, p := range phs {
		if strings.TrimSpace(repl.ReplaceKnown(p, "")) == "" {
			empty = append(empty, p)
		}
	}
	switch {
	case len(empty) > 0:
		d.line("FAIL", subject, "placeholders", strings.Join(empty, ", ")+" resolve to nothing: set the environment variable or create the file")
	case len(phs) > 0:
		d.line("ok", subject, "placeholders", fmt.Sprintf("%d resolve (%s)", len(phs), strings.Join(phs, ", ")))
	default:
		d.line("ok", subject, "placeholders", "none")
	}
	if a.Secret != "" && !strings.Contains(a.Secret, "{") {
		d.line("warn", subject, "secret", "written literally, so the admin API's /config/ shows it: use {env.*} or {file.*}")
	}
	if strings.TrimSpace(repl.ReplaceKnown(a.AppID, "")) == "" || secret == "" {
		d.line("FAIL", subject, "credentials", "appid or secret is empty: nothing more can be checked")
		return
	}

	// WeChat's domains: the configured upstreams, or the default.
	raws := a.TokenEndpoints
	if len(raws) == 0 {
		raws = a.Upstreams
	}
	if len(raws) == 0 {
		raws = []string{"https://api.weixin.qq.com"}
		if a.kind == "wecom" {
			raws = []string{"https://qyapi.weixin.qq.com"}
		}
	}
	var bases []*url.URL
	for _, s := range raws {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			d.line("FAIL", subject, "domain "+s, "not a URL")
			continue
		}
		base := &url.URL{Scheme: u.Scheme, Host: u.Host}
		r := d.domain(base)
		verdict := "ok"
		if !r.ok {
			verdict = "FAIL"
		} else {
			bases = append(bases, base)
		}
		d.line(verdict, subject, "domain "+u.Host, r.detail)
	}

	// One token fetch.
	switch {
	case a.kind == "component":
		d.line("skip", subject, "token", "a component token needs the pushed component_verify_ticket: `caddy wechat status` shows whether the running gateway has one")
	case len(bases) == 0:
		d.line("skip", subject, "token", "no domain answers")
	default:
		d.token(subject, a, appid, secret, bases)
	}

	d.store(subject, a)
}

// domain resolves the base's host and sends it one GET: any HTTP answer
// means it is reachable. Its Date header is WeChat's clock.
func (d *doctor) domain(base *url.URL) *domainResult {
	if r := d.domains[base.String()]; r != nil {
		return r
	}
	r := &domainResult{}
	d.domains[base.String()] = r
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, base.Hostname())
	if err != nil {
		r.detail = "does not resolve (" + err.Error() + "): check DNS, or the resolvers subdirective"
		return r
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base.String()+"/", nil)
	start := time.Now()
	resp, err := d.rt.RoundTrip(req)
	if err != nil {
		r.detail = fmt.Sprintf("resolves (%s) but does not answer: %v; check the firewall or proxy", strings.Join(addrs, " "), err)
		return r
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	r.ok = true
	r.detail = fmt.Sprintf("resolves (%s), answers (HTTP %d in %s)", strings.Join(addrs, " "), resp.StatusCode, time.Since(start).Round(time.Millisecond))
	if d.date.IsZero() {
		if t, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
			d.date, d.dateAt, d.dateOf = t, start.Add(time.Since(start)/2), base.Host
		}
	}
	return r
}

func (d *doctor) token(subject string, a *account, appid, secret string, bases []*url.URL) {
	api, how := credential.APIStable, "POST /cgi-bin/stable_token in normal mode, which returns the token the gateway holds: nothing retired"
	if a.kind == "wecom" {
		api, how = credential.APIWork, "GET /cgi-bin/gettoken, which returns the app's current token"
	}
	src := &credential.AccessTokenSource{RT: d.rt, Bases: bases, AppID: appid, Secret: secret, API: api}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := src.Fetch(ctx, credential.FetchOptions{})
	if err != nil {
		text := credential.ClientText(err) // no rid: rid/get would give the request, secret and all
		var ae *credential.APIError
		if errors.As(err, &ae) {
			if adv := statusview.Advice(api, text); adv != "" {
				said := credential.StripRID(ae.Msg)
				said += strings.Repeat(")", max(strings.Count(said, "(")-strings.Count(said, ")"), 0)) // the rid went with a ")"
				d.line("FAIL", subject, "token", fmt.Sprintf("errcode %d: %s (WeChat said: %s)", ae.Code, adv, said))
				return
			}
		}
		d.line("FAIL", subject, "token", text)
		return
	}
	note := ""
	if a.TokenAPI == credential.APIClassic {
		note = "; the gateway uses classic, which a stable fetch leaves alone"
	}
	d.line("ok", subject, "token", fmt.Sprintf("fetched, expires in %s (%s%s)", tok.ExpiresAt.Sub(tok.FetchedAt).Round(time.Second), how, note))
}

// store opens the account's store as the gateway would (its module from
// Caddy's registry) and reads one key that is not there.
func (d *doctor) store(subject string, a *account) {
	raw, name := a.Store, ""
	switch {
	case len(raw) > 0:
		var m struct {
			Module string `json:"module"`
		}
		json.Unmarshal(raw, &m)
		name = m.Module
	case len(a.Memcache) > 0:
		name = "memcache"
		raw, _ = json.Marshal(map[string]any{"servers": a.Memcache, "prefix": a.MemcachePrefix, "timeout": a.MemcacheTimeout})
	default:
		if a.kind == "component" {
			d.line("warn", subject, "store", "none: a restart loses every authorizer's refresh token; use a durable store (redis, sql, storage)")
		} else {
			d.line("ok", subject, "store", "none (the token lives in this process)")
		}
		return
	}
	if name == "storage" {
		raw = d.withStorage(raw)
	}
	start := time.Now()
	err := probeStore(name, raw)
	switch {
	case errors.Is(err, errOffline):
		d.line("skip", subject, "store "+name, err.Error())
	case err != nil:
		d.line("FAIL", subject, "store "+name, err.Error())
	default:
		d.line("ok", subject, "store "+name, fmt.Sprintf("answers (a read in %s)", time.Since(start).Round(time.Millisecond)))
	}
}

// withStorage gives a storage store without a storage of its own the one
// a running Caddy would give it: the config's, else file_system in
// Caddy's data directory (of the user running the doctor).
func (d *doctor) withStorage(raw json.RawMessage) json.RawMessage {
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil || m["storage"] != nil {
		return raw
	}
	if len(d.storage) > 0 {
		m["storage"] = d.storage
	} else {
		m["storage"] = map[string]any{"module": "file_system", "root": caddy.AppDataDir()}
	}
	out, err := json.Marshal(m)
	if err != nil {
		return raw
	}
	return out
}

var errOffline = errors.New("Caddy's default storage is known only to a running Caddy: not checked")

type storeProvider interface {
	OpenBackend() (credential.Backend, error)
}

func probeStore(name string, raw json.RawMessage) (err error) {
	info, err := caddy.GetModule("wechat.stores." + name)
	if err != nil {
		return fmt.Errorf("no store module %q in this Caddy", name)
	}
	mod := info.New()
	if err := json.Unmarshal(raw, mod); err != nil {
		return fmt.Errorf("config: %v", err)
	}
	cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	defer func() {
		if recover() != nil { // a module that needs a running config (Caddy's storage)
			err = errOffline
		}
	}()
	if p, ok := mod.(caddy.Provisioner); ok {
		if err := p.Provision(cctx); err != nil {
			return err
		}
	}
	sp, ok := mod.(storeProvider)
	if !ok {
		return fmt.Errorf("module %s is not a store", name)
	}
	b, err := sp.OpenBackend()
	if err != nil {
		return fmt.Errorf("does not open: %v", err)
	}
	defer b.Close()
	ctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if _, _, err := b.Get(ctx, "caddy-wechat-doctor:probe"); err != nil && !errors.Is(err, credential.ErrNotFound) {
		return fmt.Errorf("does not answer: %v; requests would go on with in-process tokens, without the cluster", err)
	}
	return nil
}

func (d *doctor) clock() {
	if d.date.IsZero() {
		d.line("skip", "clock", "within a minute", "no WeChat answer had a Date header")
		return
	}
	skew := d.dateAt.Sub(d.date).Round(time.Second) // Date has whole seconds
	abs := max(skew, -skew)
	if abs <= maxSkew+time.Second {
		d.line("ok", "clock", "within a minute", fmt.Sprintf("%s of %s's", abs, d.dateOf))
		return
	}
	dir := "ahead of"
	if skew < 0 {
		dir = "behind"
	}
	d.line("FAIL", "clock", "within a minute", fmt.Sprintf("%s %s %s: set up NTP (the callback refuses pushes with a stale timestamp)", abs, dir, d.dateOf))
}

func collectStrings(v any, f func(string)) {
	switch v := v.(type) {
	case string:
		f(v)
	case map[string]any:
		for _, x := range v {
			collectStrings(x, f)
		}
	case []any:
		for _, x := range v {
			collectStrings(x, f)
		}
	}
}

func uniq(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}
