package wechat

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/caddy-wechat/wechat/caddykit"
	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("wechat", parseCaddyfile)
	// Order it like reverse_proxy, so no `order` option is needed.
	httpcaddyfile.RegisterDirectiveOrder("wechat", httpcaddyfile.Before, "reverse_proxy")
}

// newCaddyfileTransport is a transport with the Caddyfile's defaults.
func newCaddyfileTransport() *Transport {
	t := new(Transport)
	caddykit.SetHTTPDefaults(&t.HTTPTransport)
	return t
}

// parseCaddyfile sets up the wechat gateway from Caddyfile tokens:
//
//	wechat [<matcher>] {
//	    appid           <appid>                  # required; {env.*} / {file.*} resolved at provision
//	    secret          <secret>                 # required; write it as {env.*} or {file.*}
//	    upstream        <url> [<url>...]         # default https://api.weixin.qq.com; tried in order
//	    token_api       stable|classic|work      # default stable; work = WeCom
//	    corpid          <corpid>                 # WeCom: appid + token_api work
//	    corpsecret      <corpsecret>             # WeCom: secret; upstream default https://qyapi.weixin.qq.com
//	    store           <module> { ... }         # shared credential store (memcache, redis, ...)
//	    memcache        <host:port> [...]        # short form of store memcache
//	    memcache_prefix <prefix>                 # default wechat:
//	    memcache_timeout <duration>              # default 100ms
//	    fetch_timeout   <duration>               # deadline of one token fetch; default 10s
//	    fetch_ceiling   <n>|-1                   # token fetches per day; default 200, -1 for none
//	    min_token_age   <duration>               # a younger token is kept despite a token errcode; default 60s
//	    max_replay_body <size>                   # bodies replayable after a token error; default 10MiB
//	    dial_timeout    <duration>               # upstream dial timeout; default 3s
//	    response_header_timeout <duration>       # upstream response header timeout; default 30s
//	    quota_warn      <share>                  # warn past this share of a daily quota; default 0.5 (or 50%)
//	    max_buffered_bytes <size>                # request bytes held for replay, gateway-wide; default 64MiB
//	    body_read_timeout <duration>             # abort a request body idle this long; default 30s
//	    keep_caller_auth                         # pass Authorization/Cookie on to WeChat; default: stripped
//	    sdk_token_endpoints on|off               # placeholder answers on the token endpoints; default on
//
//	    # any other reverse_proxy subdirective (lb_*, fail_duration,
//	    # header_up, flush_interval, ...) is passed to reverse_proxy, and
//	    # any http transport one (tls_*, keepalive, resolvers, ...) to the
//	    # transport
//	}
//
// It expands into reverse_proxy with the wechat transport, as php_fastcgi
// expands into reverse_proxy with the fastcgi transport.
func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	d := h.Dispenser
	d.Next() // directive name
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	t := newCaddyfileTransport()

	// Read our subdirectives, deleting them as we go, so that what is left
	// can be handed to reverse_proxy's own parser; the http transport's
	// (tls_*, keepalive, resolvers, ...) are set aside for the transport.
	rest := h.NewFromNextSegment()
	var httpToks []caddyfile.Token
	for rest.Next() {
		for rest.NextBlock(0) {
			if rest.Nesting() != 1 {
				continue
			}
			name := rest.Val()
			args := rest.RemainingArgs()
			known, err := t.parseOption(rest, name, args)
			switch {
			case err != nil:
				return nil, err
			case name == "to" || name == "transport":
				return nil, rest.Errf("%s is not allowed in wechat: use upstream; for a reverse_proxy of your own, write reverse_proxy { transport wechat { ... } }", name)
			case known:
				rest.DeleteN(len(args) + 1)
			case isProxySubdirective(name):
				// reverse_proxy's to parse
			case caddykit.IsHTTPTransportSubdirective(name):
				for range args {
					rest.Prev()
				}
				seg := rest.NextSegment()
				httpToks = append(httpToks, seg...)
				rest.DeleteN(len(seg))
			default:
				return nil, unknownSubdirective(rest, "wechat", name, "reverse_proxy's or the http transport's")
			}
		}
	}
	if len(httpToks) > 0 {
		if err := t.HTTPTransport.UnmarshalCaddyfile(caddyfile.NewDispenser(wrapBlock("wechat", httpToks))); err != nil {
			return nil, err
		}
	}
	bases, err := t.finishCaddyfile(d)
	if err != nil {
		return nil, err
	}

	return caddykit.ReverseProxyTo(h, rest, bases, caddyconfig.JSONModuleObject(t, "protocol", "wechat", nil))
}

// options points the shared subdirectives at the transport's fields.
func (t *Transport) options() caddykit.Options {
	return caddykit.Options{AppID: &t.AppID, Secret: &t.Secret, MemcachePrefix: &t.MemcachePrefix,
		TokenEndpoints: &t.TokenEndpoints, Memcache: &t.Memcache, MemcacheTimeout: &t.MemcacheTimeout,
		FetchTimeout: &t.FetchTimeout, Store: &t.Store, HTTP: &t.HTTPTransport,
		MaxReplayBody: &t.MaxReplayBody, KeepCallerAuth: &t.KeepCallerAuth}
}

// parseOption reads one account subdirective into t; known is false for a
// name that is not one. wechat and wechat_jssdk share it, so one account
// is spelled the same way in both.
func (t *Transport) parseOption(d *caddyfile.Dispenser, name string, args []string) (known bool, err error) {
	switch name {
	case "corpid": // WeCom: appid + token_api work
		err = caddykit.OneArg(d, args, &t.AppID)
		t.TokenAPI = tokenAPIWork
	case "corpsecret":
		err = caddykit.OneArg(d, args, &t.Secret)
		t.TokenAPI = tokenAPIWork
	case "token_api":
		err = caddykit.OneArg(d, args, &t.TokenAPI)
		if err == nil && t.TokenAPI != tokenAPIStable && t.TokenAPI != tokenAPIClassic && t.TokenAPI != tokenAPIWork {
			err = d.Errf("token_api must be stable or classic (work for WeCom), not %q", t.TokenAPI)
		}
	case "fetch_ceiling":
		var s string
		if err = caddykit.OneArg(d, args, &s); err == nil {
			if t.FetchCeiling, err = strconv.Atoi(s); err != nil || t.FetchCeiling == 0 || t.FetchCeiling < -1 {
				err = d.Errf("fetch_ceiling %q: want a number of fetches per day, or -1 for none", s)
			}
		}
	case "min_token_age":
		err = caddykit.ParseDuration(d, args, &t.MinTokenAge)
	case "max_buffered_bytes":
		t.MaxBufferedBytes, err = caddykit.ParseSize(d, name, args)
	case "body_read_timeout":
		err = caddykit.ParseDuration(d, args, &t.BodyReadTimeout)
	case "sdk_token_endpoints":
		var s string
		if err = caddykit.OneArg(d, args, &s); err == nil {
			var on bool
			switch s {
			case "on", "true":
				on = true
			case "off", "false":
			default:
				err = d.Errf("sdk_token_endpoints %q: want on or off", s)
			}
			t.SDKTokenEndpoints = &on
		}
	case "quota_warn":
		var s string
		if err = caddykit.OneArg(d, args, &s); err == nil {
			t.QuotaWarn, err = strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
			if strings.HasSuffix(s, "%") {
				t.QuotaWarn /= 100
			}
			if err != nil || t.QuotaWarn <= 0 || t.QuotaWarn > 1 {
				err = d.Errf("quota_warn %q: want a share of the daily quota, 0.5 or 50%%", s)
			}
		}
	default:
		return t.options().Parse(d, name, args)
	}
	return true, err
}

// finishCaddyfile checks what every account needs, fills the WeCom default
// upstream, and turns on TLS for https upstreams. Its messages carry no
// directive name: Caddy's own "parsing caddyfile tokens for" names it.
func (t *Transport) finishCaddyfile(d *caddyfile.Dispenser) ([]*url.URL, error) {
	if t.AppID == "" {
		return nil, d.Err("appid is required (corpid for WeCom)")
	}
	if t.Secret == "" {
		return nil, d.Err("secret is required (corpsecret for WeCom); write it as {env.*} or {file.*}")
	}
	t.TokenEndpoints = t.endpoints() // the account's own defaults
	bases, err := gateway.ParseUpstreams(t.TokenEndpoints)
	if err != nil {
		return nil, d.Err(err.Error())
	}
	if bases[0].Scheme == "https" && t.TLS == nil {
		t.TLS = new(reverseproxy.TLSConfig)
	}
	return bases, nil
}
