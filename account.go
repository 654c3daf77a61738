package wechat

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/caddy-wechat/wechat/caddykit"
	"github.com/caddyserver/caddy/v2"
)

// Account is the configuration of one WeChat account, shared by the
// wechat transport and the wechat_jssdk handler (through its Transport),
// with one place for its defaults and validation: the methods below,
// which both the Caddyfile adapter and Provision use.
type Account struct {
	// The account's appid. Placeholders such as {env.X} and {file.X}
	// are resolved at provision.
	AppID string `json:"appid,omitempty"`

	// The account's secret. Write it as a placeholder ({env.X} or
	// {file.X}) so that the admin API's /config/ never shows it.
	Secret string `json:"secret,omitempty"`

	// "stable" (default) or "classic".
	TokenAPI string `json:"token_api,omitempty"`

	// Base URLs of the token endpoints, tried in order. They should be
	// the same hosts as the reverse_proxy upstreams (a request to another
	// host is logged once). Default https://api.weixin.qq.com.
	TokenEndpoints []string `json:"token_endpoints,omitempty"`

	// Deprecated: the old name of token_endpoints.
	Upstreams []string `json:"upstreams,omitempty"`

	// The shared store of the account's credentials: a module of the
	// wechat.stores namespace (memcache, redis, sql, storage, ...).
	// None: the credentials live in this process only.
	Store json.RawMessage `json:"store,omitempty" caddy:"namespace=wechat.stores inline_key=module"`

	// Memcache servers (host:port): the short form of a memcache store.
	Memcache []string `json:"memcache,omitempty"`

	// Prefix of the memcache keys. Default "wechat:".
	MemcachePrefix string `json:"memcache_prefix,omitempty"`

	// Timeout of each memcache operation. Default 100ms.
	MemcacheTimeout caddy.Duration `json:"memcache_timeout,omitempty"`

	// Deadline of one token fetch, independent of any client. Default 10s.
	FetchTimeout caddy.Duration `json:"fetch_timeout,omitempty"`

	// Most token fetches per account per day (Beijing), counted across
	// the cluster with a store. Default 200, far below WeChat's quotas;
	// -1 for none.
	FetchCeiling int `json:"fetch_ceiling,omitempty"`

	// A token younger than this is not given up on because of a token
	// errcode from a request. Default 60s.
	MinTokenAge caddy.Duration `json:"min_token_age,omitempty"`

	// Share of a daily quota (2000 classic fetches, 20 force_refresh)
	// past which a warning is logged. Default 0.5.
	QuotaWarn float64 `json:"quota_warn,omitempty"`
}

// tokenAPI is token_api with its default, checked.
func (a *Account) tokenAPI() (string, error) {
	switch a.TokenAPI {
	case "":
		return tokenAPIStable, nil
	case tokenAPIStable, tokenAPIClassic, tokenAPIWork:
		return a.TokenAPI, nil
	}
	return "", fmt.Errorf("token_api must be stable, classic or work, not %q", a.TokenAPI)
}

// endpoints is token_endpoints with its defaults: the deprecated
// upstreams, then WeCom's host for token_api work (parseUpstreams adds
// api.weixin.qq.com when empty).
func (a *Account) endpoints() []string {
	switch {
	case len(a.TokenEndpoints) > 0:
		return a.TokenEndpoints
	case len(a.Upstreams) > 0:
		return a.Upstreams
	case a.TokenAPI == tokenAPIWork:
		return []string{defaultWorkUpstream}
	}
	return nil
}

func (a *Account) fetchTimeout() time.Duration {
	if a.FetchTimeout > 0 {
		return time.Duration(a.FetchTimeout)
	}
	return defaultFetchTimeout
}

func (a *Account) minTokenAge() time.Duration {
	if a.MinTokenAge != 0 {
		return time.Duration(a.MinTokenAge)
	}
	return caddykit.DefaultMinTokenAge
}
