// Package wechat is a Caddy module that turns reverse_proxy into a WeChat
// API gateway: apps call WeChat through Caddy without an access_token, and
// the gateway adds a cached, cluster-shared token and replays a request
// once when WeChat says the token has gone bad.
package wechat

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Transport{})
}

// Transport is the reverse_proxy transport "wechat". The Caddyfile
// directive `wechat` expands into reverse_proxy with this transport, the
// way php_fastcgi expands into reverse_proxy with the fastcgi transport.
//
// It embeds the standard HTTP transport, so every option of that transport
// (tls, timeouts, keepalive, ...) is available in JSON.
type Transport struct {
	reverseproxy.HTTPTransport

	// The account's appid. Placeholders such as {env.X} and {file.X}
	// are resolved at provision.
	AppID string `json:"appid,omitempty"`

	// The account's secret. Write it as a placeholder ({env.X} or
	// {file.X}) so that the admin API's /config/ never shows it.
	Secret string `json:"secret,omitempty"`

	// "stable" (default) or "classic".
	TokenAPI string `json:"token_api,omitempty"`

	// Base URLs of the token endpoint, tried in order. They should be
	// the same hosts as the reverse_proxy upstreams. Default
	// https://api.weixin.qq.com.
	Upstreams []string `json:"upstreams,omitempty"`

	// Memcache servers (host:port) holding the cluster-wide token.
	// None: the token lives in this process only.
	Memcache []string `json:"memcache,omitempty"`

	// Prefix of the memcache keys. Default "wechat:".
	MemcachePrefix string `json:"memcache_prefix,omitempty"`

	// Timeout of each memcache operation. Default 100ms.
	MemcacheTimeout caddy.Duration `json:"memcache_timeout,omitempty"`

	// Deadline of one token fetch, independent of any client. Default 10s.
	FetchTimeout caddy.Duration `json:"fetch_timeout,omitempty"`

	// Largest request body kept in memory so that it can be replayed
	// after a token error. Larger bodies stream through without the
	// replay. Default 10 MiB, WeChat's media upload limit.
	MaxReplayBody int64 `json:"max_replay_body,omitempty"`

	// Share of a daily quota (2000 classic fetches, 20 force_refresh)
	// past which a warning is logged. Default 0.5.
	QuotaWarn float64 `json:"quota_warn,omitempty"`

	// Whether /cgi-bin/token, /cgi-bin/stable_token and /cgi-bin/gettoken
	// answer with a placeholder token, so that an unmodified SDK works
	// (default true). false answers 403 (errcode 40002) instead.
	SDKTokenEndpoints *bool `json:"sdk_token_endpoints,omitempty"`

	secret  string
	acct    *account
	binding *binding
	poolKey string
	metrics *metrics
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.wechat",
		New: func() caddy.Module { return new(Transport) },
	}
}

const (
	defaultUpstream      = "https://api.weixin.qq.com"
	defaultFetchTimeout  = 10 * time.Second
	defaultMaxReplayBody = 10 << 20
)

// accounts keeps each account's token across config reloads: a reload that
// keeps the account finds its token, refresher and backoff state here.
var accounts = caddy.NewUsagePool()

// Provision resolves placeholders, checks the config, and attaches to the
// account's long-lived token cache.
func (t *Transport) Provision(ctx caddy.Context) error {
	t.logger = ctx.Logger()
	repl := caddy.NewReplacer()
	appid := strings.TrimSpace(repl.ReplaceKnown(t.AppID, ""))
	t.secret = strings.TrimSpace(repl.ReplaceKnown(t.Secret, ""))
	if appid == "" {
		return fmt.Errorf("wechat: appid is required (got %q after resolving placeholders)", t.AppID)
	}
	if t.secret == "" {
		return fmt.Errorf("wechat: secret is required for appid %s (got an empty value after resolving %q)", appid, t.Secret)
	}
	if !strings.Contains(t.Secret, "{") {
		t.logger.Warn("wechat: the secret is written literally in the config, so the admin API's /config/ shows it; use {env.*} or {file.*}",
			zap.String("appid", appid))
	}
	api := t.TokenAPI
	if api == "" {
		api = tokenAPIStable
	}
	if api != tokenAPIStable && api != tokenAPIClassic && api != tokenAPIWork {
		return fmt.Errorf("wechat: token_api must be stable, classic or work, not %q", t.TokenAPI)
	}
	ups := t.Upstreams
	if len(ups) == 0 && api == tokenAPIWork {
		ups = []string{defaultWorkUpstream}
	}
	bases, err := parseUpstreams(ups)
	if err != nil {
		return err
	}
	if bases[0].Scheme == "https" && t.TLS == nil {
		t.TLS = new(reverseproxy.TLSConfig)
	}
	if err := t.HTTPTransport.Provision(ctx); err != nil {
		return fmt.Errorf("wechat: %v", err)
	}
	t.metrics = newMetrics(ctx, appid)

	t.poolKey = accountKey(appid, t.secret, api, t.Memcache, t.MemcachePrefix)
	val, _, err := accounts.LoadOrNew(t.poolKey, func() (caddy.Destructor, error) {
		return newAccount(t.poolKey, appid, api, t.storeConfig())
	})
	if err != nil {
		return fmt.Errorf("wechat: %v", err)
	}
	t.acct = val.(*account)
	t.acct.setFetchTimeout(t.fetchTimeout())
	t.binding = &binding{
		f:      &fetcher{rt: t.HTTPTransport.Transport, bases: bases, appid: appid, secret: t.secret, api: api, now: t.acct.now, quotaWarn: t.QuotaWarn},
		logger: t.logger,
		m:      t.metrics,
	}
	t.acct.attach(t.binding)
	t.acct.refresher.start()
	return nil
}

// Cleanup releases this config's hold on the account; the last config to
// let go stops its refresher.
func (t *Transport) Cleanup() error {
	if t.binding != nil {
		t.acct.detach(t.binding)
	}
	if t.poolKey != "" {
		if _, err := accounts.Delete(t.poolKey); err != nil {
			return err
		}
	}
	return t.HTTPTransport.Cleanup()
}

func (t *Transport) fetchTimeout() time.Duration {
	if t.FetchTimeout > 0 {
		return time.Duration(t.FetchTimeout)
	}
	return defaultFetchTimeout
}

func (t *Transport) maxReplay() int64 {
	if t.MaxReplayBody > 0 {
		return t.MaxReplayBody
	}
	return defaultMaxReplayBody
}

// accountKey names an account without holding its secret: a hash of the
// secret, so that a changed secret is a new account and two WeCom apps of
// one corp are two keys, yet the key can sit in memcache and logs.
func accountKey(appid, secret, api string, memcache []string, prefix string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s", appid, secret, api)
	sum := hex.EncodeToString(h.Sum(nil))[:16]
	key := api + ":" + appid + ":" + sum
	if len(memcache) > 0 {
		key += "@" + prefix + "|" + strings.Join(memcache, ",")
	}
	return key
}

// parseUpstreams checks the upstream URLs: http or https, a host, nothing
// else, and one scheme for all (they share one transport).
func parseUpstreams(raw []string) ([]*url.URL, error) {
	if len(raw) == 0 {
		raw = []string{defaultUpstream}
	}
	var out []*url.URL
	for _, s := range raw {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("wechat: bad upstream %q: %v", s, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("wechat: bad upstream %q: the scheme must be http or https", s)
		}
		if u.Host == "" || u.Hostname() == "" {
			return nil, fmt.Errorf("wechat: bad upstream %q: no host", s)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("wechat: bad upstream %q: give only scheme://host[:port]", s)
		}
		if len(out) > 0 && out[0].Scheme != u.Scheme {
			return nil, fmt.Errorf("wechat: upstreams mix http and https (%s, %s); use one scheme", out[0], u)
		}
		out = append(out, &url.URL{Scheme: u.Scheme, Host: u.Host})
	}
	return out, nil
}

// Interface guards
var (
	_ caddy.Provisioner  = (*Transport)(nil)
	_ caddy.CleanerUpper = (*Transport)(nil)
	_ caddy.Module       = (*Transport)(nil)
)
