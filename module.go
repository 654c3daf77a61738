// Package wechat is a Caddy module that turns reverse_proxy into a WeChat
// API gateway: apps call WeChat through Caddy without an access_token, and
// the gateway adds a cached, cluster-shared token and replays a request
// once when WeChat says the token has gone bad.
package wechat

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddy-wechat/wechat/caddykit"
	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/caddy-wechat/wechat/stores"
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

	// The account: its fields sit at the top level of the JSON.
	Account

	// Largest request body kept in memory so that it can be replayed
	// after a token error. Larger bodies stream through without the
	// replay. Default 10 MiB, WeChat's media upload limit.
	MaxReplayBody int64 `json:"max_replay_body,omitempty"`

	// Total request bytes held for replay by the gateway at once. Past
	// it a body streams through without the replay. Default 64 MiB.
	MaxBufferedBytes int64 `json:"max_buffered_bytes,omitempty"`

	// A request body that makes no progress for this long is aborted.
	// Default 30s.
	BodyReadTimeout caddy.Duration `json:"body_read_timeout,omitempty"`

	// Pass the caller's Authorization, Proxy-Authorization and Cookie
	// headers on to WeChat. Off by default: they are the caller's.
	KeepCallerAuth bool `json:"keep_caller_auth,omitempty"`

	// Whether /cgi-bin/token, /cgi-bin/stable_token and /cgi-bin/gettoken
	// answer with a placeholder token, so that an unmodified SDK works
	// (default true). false answers 403 (errcode 40002) instead.
	SDKTokenEndpoints *bool `json:"sdk_token_endpoints,omitempty"`

	secret  string
	bases   []*url.URL
	acct    *sharedAccount
	binding *binding
	poolKey string
	metrics *metrics
	logger  *zap.Logger

	// opaque: send puts the request target in URL.Opaque (no proxy
	// needs the absolute form).
	opaque bool

	sent        *gateway.TokenRing          // tokens this transport sent lately
	recent      func(dst []string) []string // tokens to scrub; nil: current + sent
	needleCache *atomic.Pointer[gateway.Needles]
	scrubHits   *gateway.Hits
}

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.wechat",
		New: func() caddy.Module { return new(Transport) },
	}
}

// defaultFetchTimeout is fetch_timeout's default: the deadline of one
// token fetch.
const defaultFetchTimeout = 10 * time.Second

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
		return fmt.Errorf("appid is required (got %q after resolving placeholders)", t.AppID)
	}
	if t.secret == "" {
		return fmt.Errorf("secret is required for appid %s (got an empty value after resolving %q)", appid, t.Secret)
	}
	if !strings.Contains(t.Secret, "{") {
		t.logger.Warn("the secret is written literally in the config, so the admin API's /config/ shows it; use {env.*} or {file.*}",
			zap.String("appid", appid))
	}
	api, err := t.tokenAPI()
	if err != nil {
		return err
	}
	if len(t.TokenEndpoints) == 0 && len(t.Upstreams) > 0 {
		t.logger.Warn("the transport's \"upstreams\" field is deprecated; call it \"token_endpoints\"")
	}
	bases, err := gateway.ParseUpstreams(t.endpoints())
	if err != nil {
		return err
	}
	if bases[0].Scheme == "https" && t.TLS == nil {
		t.TLS = new(reverseproxy.TLSConfig)
	}
	if err := t.HTTPTransport.Provision(ctx); err != nil {
		return err
	}
	t.provisionUpstream()
	t.bases = bases
	store, err := stores.Load(ctx, t, "Store", t.Store, t.Memcache, t.MemcachePrefix, t.MemcacheTimeout)
	if err != nil {
		return err
	}
	set := accountSettings{appid: appid, secret: t.secret, api: api, fetchTimeout: t.fetchTimeout(),
		minAge: t.minTokenAge(), ceiling: t.FetchCeiling, store: store}
	// Everything that changes how a credential is fetched or shared is in
	// the key, so two configs that differ get two accounts instead of the
	// last one provisioned silently winning.
	var fetchID strings.Builder
	for _, b := range bases {
		fetchID.WriteString(b.String() + ",")
	}
	tlsJSON, _ := json.Marshal(t.TLS)
	fmt.Fprintf(&fetchID, "|%s|%s|%d|%s", set.fetchTimeout, set.minAge, set.ceiling, tlsJSON)
	t.poolKey = accountKey(appid, t.secret, api, stores.Key(store), fetchID.String())
	t.provisionRequestPath(ctx)
	val, _, err := accounts.LoadOrNew(t.poolKey, func() (caddy.Destructor, error) {
		return newAccount(t.poolKey, set)
	})
	if err != nil {
		return err
	}
	t.acct = val.(*sharedAccount)
	t.metrics = newMetrics(ctx, appid, t.acct.label)
	t.metrics.quotaWarn = t.QuotaWarn
	t.scrubHits = caddykit.ScrubHits(appid)
	t.binding = &binding{
		src:    &credential.AccessTokenSource{RT: t.HTTPTransport.Transport, Bases: bases, AppID: appid, Secret: t.secret, API: api},
		logger: t.logger.With(zap.String(credential.FieldAccount, t.acct.label)), // the engine's lines name the account
		m:      t.metrics,
	}
	t.acct.attach(t.binding)
	t.acct.warm()
	return nil
}

// checkHost logs once per account when a proxied request goes to a host
// that is not a token endpoint: the token would then be fetched from one
// place and used at another.
func (t *Transport) checkHost(host string) {
	if len(t.bases) == 0 || t.logger == nil {
		return // not provisioned (unit tests and benchmarks)
	}
	for _, b := range t.bases {
		if b.Host == host {
			return
		}
	}
	a := t.acct
	a.mu.Lock()
	first := !a.warnedUp
	a.warnedUp = true
	a.mu.Unlock()
	if first {
		t.logger.Warn("a request went to a host that is not among the token endpoints; set token_endpoints to the same hosts",
			zap.String("appid", a.appid), zap.String("host", host))
	}
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

// provisionUpstream sets up how send reaches the upstream once the http
// transport is provisioned: the request target in URL.Opaque where no
// proxy can need the absolute form (HTTP/3's own client is left the URL
// it knows).
func (t *Transport) provisionUpstream() {
	t.opaque = proxyFree(&t.HTTPTransport) && !slices.Contains(t.Versions, "3")
}

// proxyFree reports that no proxy can carry h's requests: no
// network_proxy module, and no HTTP_PROXY that net/http would use for a
// cleartext request. Through a proxy a cleartext request line must be in
// absolute form (so send keeps the query in RawQuery).
func proxyFree(h *reverseproxy.HTTPTransport) bool {
	if len(h.NetworkProxyRaw) > 0 || h.ForwardProxyURL != "" {
		return false
	}
	// net/http's own reading of the environment (read once and kept), for
	// a host NO_PROXY is unlikely to name.
	probe := &http.Request{URL: &url.URL{Scheme: "http", Host: "wechat.invalid"}}
	u, err := http.ProxyFromEnvironment(probe)
	return u == nil && err == nil
}

func (t *Transport) maxReplay() int64 {
	if t.MaxReplayBody > 0 {
		return t.MaxReplayBody
	}
	return caddykit.DefaultMaxReplayBody
}

// accountKey names an account in the process's pool without holding its
// secret: a changed secret is a new account, and two WeCom apps of one
// corp are two keys. It never leaves the process.
func accountKey(appid, secret, api, storeID, fetchID string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s", appid, secret, api, storeID, fetchID)
	return api + ":" + appid + ":" + hex.EncodeToString(h.Sum(nil))[:24]
}

// Interface guards
var (
	_ caddy.Provisioner  = (*Transport)(nil)
	_ caddy.CleanerUpper = (*Transport)(nil)
	_ caddy.Module       = (*Transport)(nil)
)
