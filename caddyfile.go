package wechat

import (
	"encoding/json"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-wechat/wechat/stores"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("wechat", parseCaddyfile)
	// Order it like reverse_proxy, so no `order` option is needed.
	httpcaddyfile.RegisterDirectiveOrder("wechat", httpcaddyfile.Before, "reverse_proxy")
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
			case isHTTPTransportSubdirective(name):
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

	return reverseProxyTo(h, rest, bases, caddyconfig.JSONModuleObject(t, "protocol", "wechat", nil))
}

// reverseProxyTo builds the reverse_proxy that a gateway directive expands
// into: reverse_proxy's own subdirectives left in rest, the token
// endpoints as its upstreams with the failover defaults, and transport.
// wechat and wechat_component share it, so both fail over alike.
func reverseProxyTo(h httpcaddyfile.Helper, rest *caddyfile.Dispenser, bases []*url.URL, transport json.RawMessage) (*reverseproxy.Handler, error) {
	rp := new(reverseproxy.Handler)
	rest.Reset() // reverse_proxy's parser consumes the directive name itself
	if err := rp.UnmarshalCaddyfile(rest); err != nil {
		return nil, err
	}
	if err := rp.FinalizeUnmarshalCaddyfile(h); err != nil {
		return nil, err
	}
	for _, b := range bases {
		port := b.Port()
		if port == "" {
			port = "80"
			if b.Scheme == "https" {
				port = "443"
			}
		}
		rp.Upstreams = append(rp.Upstreams, &reverseproxy.Upstream{Dial: net.JoinHostPort(b.Hostname(), port)})
	}
	// Several domains (api, api2, sh/sz/hk): use them in order, move on
	// when one cannot be reached, and avoid it for a while.
	if len(bases) > 1 {
		if rp.LoadBalancing == nil {
			rp.LoadBalancing = new(reverseproxy.LoadBalancing)
		}
		if rp.LoadBalancing.SelectionPolicyRaw == nil {
			rp.LoadBalancing.SelectionPolicyRaw = caddyconfig.JSONModuleObject(new(reverseproxy.FirstSelection), "policy", "first", nil)
		}
		if rp.LoadBalancing.Retries == 0 && rp.LoadBalancing.TryDuration == 0 {
			rp.LoadBalancing.Retries = len(bases) - 1
		}
		if rp.LoadBalancing.RetryMatchRaw == nil {
			rp.LoadBalancing.RetryMatchRaw = retryOn5xx
		}
		if rp.HealthChecks == nil {
			rp.HealthChecks = &reverseproxy.HealthChecks{Passive: &reverseproxy.PassiveHealthChecks{
				FailDuration:    caddy.Duration(30 * time.Second),
				MaxFails:        1,
				UnhealthyStatus: []int{5},
			}}
		}
	}
	rp.TransportRaw = transport
	return rp, nil
}

// retryOn5xx moves a request on to the next domain when one answers 5xx:
// any 5xx for GET and HEAD, only 502/503/504 (the edge never reached
// WeChat) for other methods, so a POST that WeChat may have acted on is
// not sent twice. The method matcher keeps reverse_proxy's default of
// retrying GETs after a transport error, which a retry_match replaces.
var retryOn5xx = caddyhttp.RawMatcherSets{
	{"method": json.RawMessage(`["GET","HEAD"]`)},
	{"expression": json.RawMessage(`"type({http.reverse_proxy.status_code}) == int && {http.reverse_proxy.status_code} >= 500 && ({http.request.method} in [\"GET\", \"HEAD\"] || {http.reverse_proxy.status_code} in [502, 503, 504])"`)},
}

// newCaddyfileTransport is a transport with the Caddyfile's defaults.
func newCaddyfileTransport() *Transport {
	t := new(Transport)
	t.DialTimeout = caddy.Duration(3 * time.Second)
	t.ResponseHeaderTimeout = caddy.Duration(30 * time.Second)
	return t
}

// optionFields are where the subdirectives shared by wechat,
// wechat_jssdk, wechat_component and wechat_component_callback land: each
// directive points them at its own configuration, so one credential is
// spelled the same way everywhere and no directive parses into another's
// type. A nil field is an option the directive does not take.
type optionFields struct {
	appID, secret, memcachePrefix *string
	tokenEndpoints, memcache      *[]string
	memcacheTimeout, fetchTimeout *caddy.Duration
	store                         *json.RawMessage
	http                          *reverseproxy.HTTPTransport // dial_timeout, response_header_timeout
	maxReplayBody                 *int64
	keepCallerAuth                *bool
}

// oneArg stores the one argument of a subdirective in into.
func oneArg(d *caddyfile.Dispenser, args []string, into *string) error {
	if len(args) != 1 {
		return d.ArgErr()
	}
	*into = args[0]
	return nil
}

// parse reads one shared subdirective; known is false for a name that is
// not one, or that this directive does not take.
func (f optionFields) parse(d *caddyfile.Dispenser, name string, args []string) (known bool, err error) {
	switch {
	case name == "appid" && f.appID != nil:
		err = oneArg(d, args, f.appID)
	case name == "secret" && f.secret != nil:
		err = oneArg(d, args, f.secret)
	case name == "upstream" && f.tokenEndpoints != nil:
		if len(args) == 0 {
			err = d.ArgErr()
		}
		for _, a := range args {
			if !strings.Contains(a, "://") && err == nil {
				err = d.Errf("upstream %s has no scheme; write upstream %s://%s", a, guessScheme(a), a)
			}
		}
		*f.tokenEndpoints = append(*f.tokenEndpoints, args...)
	case name == "memcache" && f.memcache != nil:
		if len(args) == 0 {
			err = d.ArgErr()
		}
		for _, a := range args {
			if _, _, e := net.SplitHostPort(a); e != nil {
				err = d.Errf("memcache server %q: %v (want host:port)", a, e)
			}
		}
		*f.memcache = append(*f.memcache, args...)
	case name == "memcache_prefix" && f.memcachePrefix != nil:
		err = oneArg(d, args, f.memcachePrefix)
	case name == "memcache_timeout" && f.memcacheTimeout != nil:
		err = parseDuration(d, args, f.memcacheTimeout)
	case name == "fetch_timeout" && f.fetchTimeout != nil:
		err = parseDuration(d, args, f.fetchTimeout)
	case name == "store" && f.store != nil:
		*f.store, err = stores.ParseCaddyfile(d, args)
	case name == "dial_timeout" && f.http != nil:
		err = parseDuration(d, args, &f.http.DialTimeout)
	case name == "response_header_timeout" && f.http != nil:
		err = parseDuration(d, args, &f.http.ResponseHeaderTimeout)
	case name == "max_replay_body" && f.maxReplayBody != nil:
		*f.maxReplayBody, err = parseSize(d, name, args)
	case name == "keep_caller_auth" && f.keepCallerAuth != nil:
		if len(args) != 0 {
			err = d.ArgErr()
		}
		*f.keepCallerAuth = true
	default:
		return false, nil
	}
	return true, err
}

// parseSize reads a size such as 10MiB.
func parseSize(d *caddyfile.Dispenser, name string, args []string) (int64, error) {
	var s string
	if err := oneArg(d, args, &s); err != nil {
		return 0, err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, d.Errf("%s %q: %v", name, s, err)
	}
	return int64(n), nil
}

// options points the shared subdirectives at the transport's fields.
func (t *Transport) options() optionFields {
	return optionFields{appID: &t.AppID, secret: &t.Secret, memcachePrefix: &t.MemcachePrefix,
		tokenEndpoints: &t.TokenEndpoints, memcache: &t.Memcache, memcacheTimeout: &t.MemcacheTimeout,
		fetchTimeout: &t.FetchTimeout, store: &t.Store, http: &t.HTTPTransport,
		maxReplayBody: &t.MaxReplayBody, keepCallerAuth: &t.KeepCallerAuth}
}

// parseOption reads one account subdirective into t; known is false for a
// name that is not one. wechat and wechat_jssdk share it, so one account
// is spelled the same way in both.
func (t *Transport) parseOption(d *caddyfile.Dispenser, name string, args []string) (known bool, err error) {
	switch name {
	case "corpid": // WeCom: appid + token_api work
		err = oneArg(d, args, &t.AppID)
		t.TokenAPI = tokenAPIWork
	case "corpsecret":
		err = oneArg(d, args, &t.Secret)
		t.TokenAPI = tokenAPIWork
	case "token_api":
		err = oneArg(d, args, &t.TokenAPI)
		if err == nil && t.TokenAPI != tokenAPIStable && t.TokenAPI != tokenAPIClassic && t.TokenAPI != tokenAPIWork {
			err = d.Errf("token_api must be stable or classic (work for WeCom), not %q", t.TokenAPI)
		}
	case "fetch_ceiling":
		var s string
		if err = oneArg(d, args, &s); err == nil {
			if t.FetchCeiling, err = strconv.Atoi(s); err != nil || t.FetchCeiling == 0 || t.FetchCeiling < -1 {
				err = d.Errf("fetch_ceiling %q: want a number of fetches per day, or -1 for none", s)
			}
		}
	case "min_token_age":
		err = parseDuration(d, args, &t.MinTokenAge)
	case "max_buffered_bytes":
		t.MaxBufferedBytes, err = parseSize(d, name, args)
	case "body_read_timeout":
		err = parseDuration(d, args, &t.BodyReadTimeout)
	case "sdk_token_endpoints":
		var s string
		if err = oneArg(d, args, &s); err == nil {
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
		if err = oneArg(d, args, &s); err == nil {
			t.QuotaWarn, err = strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
			if strings.HasSuffix(s, "%") {
				t.QuotaWarn /= 100
			}
			if err != nil || t.QuotaWarn <= 0 || t.QuotaWarn > 1 {
				err = d.Errf("quota_warn %q: want a share of the daily quota, 0.5 or 50%%", s)
			}
		}
	default:
		return t.options().parse(d, name, args)
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
	bases, err := parseUpstreams(t.TokenEndpoints)
	if err != nil {
		return nil, d.Err(err.Error())
	}
	if bases[0].Scheme == "https" && t.TLS == nil {
		t.TLS = new(reverseproxy.TLSConfig)
	}
	return bases, nil
}

// parseDuration is stores.ParseDuration: one spelling of a duration for
// every wechat directive.
var parseDuration = stores.ParseDuration
