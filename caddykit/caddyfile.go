package caddykit

import (
	"encoding/json"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/caddy-wechat/wechat/stores"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/dustin/go-humanize"
)

// ReverseProxyTo builds the reverse_proxy that a gateway directive expands
// into: reverse_proxy's own subdirectives left in rest, the token
// endpoints as its upstreams with the failover defaults, and transport.
// wechat and wechat_component share it, so both fail over alike.
func ReverseProxyTo(h httpcaddyfile.Helper, rest *caddyfile.Dispenser, bases []*url.URL, transport json.RawMessage) (*reverseproxy.Handler, error) {
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

// SetHTTPDefaults gives a Caddyfile transport its defaults: a 3 s dial and
// 30 s for WeChat's answer headers, for the account and the component
// alike.
func SetHTTPDefaults(h *reverseproxy.HTTPTransport) {
	h.DialTimeout = caddy.Duration(3 * time.Second)
	h.ResponseHeaderTimeout = caddy.Duration(30 * time.Second)
}

// Options are where the subdirectives shared by wechat,
// wechat_jssdk, wechat_component and wechat_component_callback land: each
// directive points them at its own configuration, so one credential is
// spelled the same way everywhere and no directive parses into another's
// type. A nil field is an option the directive does not take.
type Options struct {
	AppID, Secret, MemcachePrefix *string
	TokenEndpoints, Memcache      *[]string
	MemcacheTimeout, FetchTimeout *caddy.Duration
	Store                         *json.RawMessage
	HTTP                          *reverseproxy.HTTPTransport // dial_timeout, response_header_timeout
	MaxReplayBody                 *int64
	KeepCallerAuth                *bool
}

// OneArg stores the one argument of a subdirective in into.
func OneArg(d *caddyfile.Dispenser, args []string, into *string) error {
	if len(args) != 1 {
		return d.ArgErr()
	}
	*into = args[0]
	return nil
}

// Parse reads one shared subdirective; known is false for a name that is
// not one, or that this directive does not take.
func (f Options) Parse(d *caddyfile.Dispenser, name string, args []string) (known bool, err error) {
	switch {
	case name == "appid" && f.AppID != nil:
		err = OneArg(d, args, f.AppID)
	case name == "secret" && f.Secret != nil:
		err = OneArg(d, args, f.Secret)
	case name == "upstream" && f.TokenEndpoints != nil:
		if len(args) == 0 {
			err = d.ArgErr()
		}
		for _, a := range args {
			if !strings.Contains(a, "://") && err == nil {
				err = d.Errf("upstream %s has no scheme; write upstream %s://%s", a, gateway.GuessScheme(a), a)
			}
		}
		*f.TokenEndpoints = append(*f.TokenEndpoints, args...)
	case name == "memcache" && f.Memcache != nil:
		if len(args) == 0 {
			err = d.ArgErr()
		}
		for _, a := range args {
			if _, _, e := net.SplitHostPort(a); e != nil {
				err = d.Errf("memcache server %q: %v (want host:port)", a, e)
			}
		}
		*f.Memcache = append(*f.Memcache, args...)
	case name == "memcache_prefix" && f.MemcachePrefix != nil:
		err = OneArg(d, args, f.MemcachePrefix)
	case name == "memcache_timeout" && f.MemcacheTimeout != nil:
		err = ParseDuration(d, args, f.MemcacheTimeout)
	case name == "fetch_timeout" && f.FetchTimeout != nil:
		err = ParseDuration(d, args, f.FetchTimeout)
	case name == "store" && f.Store != nil:
		*f.Store, err = stores.ParseCaddyfile(d, args)
	case name == "dial_timeout" && f.HTTP != nil:
		err = ParseDuration(d, args, &f.HTTP.DialTimeout)
	case name == "response_header_timeout" && f.HTTP != nil:
		err = ParseDuration(d, args, &f.HTTP.ResponseHeaderTimeout)
	case name == "max_replay_body" && f.MaxReplayBody != nil:
		*f.MaxReplayBody, err = ParseSize(d, name, args)
	case name == "keep_caller_auth" && f.KeepCallerAuth != nil:
		if len(args) != 0 {
			err = d.ArgErr()
		}
		*f.KeepCallerAuth = true
	default:
		return false, nil
	}
	return true, err
}

// ParseSize reads a size such as 10MiB.
func ParseSize(d *caddyfile.Dispenser, name string, args []string) (int64, error) {
	var s string
	if err := OneArg(d, args, &s); err != nil {
		return 0, err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, d.Errf("%s %q: %v", name, s, err)
	}
	return int64(n), nil
}

// ParseDuration is stores.ParseDuration: one spelling of a duration for
// every wechat directive.
var ParseDuration = stores.ParseDuration

// IsHTTPTransportSubdirective asks the http transport's own parser
// whether it knows name, so a gateway's transport block passes real http
// subdirectives on and names typos, with no list of ours to go stale.
func IsHTTPTransportSubdirective(name string) bool {
	return KnownTo(name, "http", func(d *caddyfile.Dispenser) error {
		return new(reverseproxy.HTTPTransport).UnmarshalCaddyfile(d)
	})
}

// KnownTo runs a parser on `<directive> { name }` alone: it rejects only
// names it does not recognize (any other error is about the missing
// arguments). A parser that panics on the bare name is taken to know it.
func KnownTo(name, directive string, parse func(*caddyfile.Dispenser) error) (known bool) {
	defer func() {
		if recover() != nil {
			known = true
		}
	}()
	toks := []caddyfile.Token{
		{File: "probe", Line: 1, Text: directive},
		{File: "probe", Line: 1, Text: "{"},
		{File: "probe", Line: 2, Text: name},
		{File: "probe", Line: 3, Text: "}"},
	}
	err := parse(caddyfile.NewDispenser(toks))
	return err == nil || !strings.Contains(err.Error(), "unrecognized subdirective")
}

// UnmarshalTransport parses a `transport <name> { ... }` block of a
// gateway transport that embeds ht, the fastcgi way: parse takes the
// transport's own subdirectives (false: not one of ours), and everything
// else goes to the http transport's own parser, so that tls, keepalive
// and the rest keep working. Written once so that both transports apply
// the same defaults and refuse the same unknown names.
func UnmarshalTransport(d *caddyfile.Dispenser, ht *reverseproxy.HTTPTransport,
	parse func(d *caddyfile.Dispenser, name string, args []string) (bool, error),
	unknown func(d *caddyfile.Dispenser, name string) error) error {
	d.Next() // the transport name
	if d.NextArg() {
		return d.ArgErr()
	}
	// The directive's defaults, so that both forms give the same JSON.
	if ht.DialTimeout == 0 {
		ht.DialTimeout = caddy.Duration(3 * time.Second)
	}
	if ht.ResponseHeaderTimeout == 0 {
		ht.ResponseHeaderTimeout = caddy.Duration(30 * time.Second)
	}
	// Read ours, deleting them from a copy; the rest goes to the http
	// transport's parser.
	rest := d.NewFromNextSegment()
	for rest.Next() {
		for rest.NextBlock(0) {
			if rest.Nesting() != 1 {
				continue
			}
			name := rest.Val()
			args := rest.RemainingArgs()
			known, err := parse(rest, name, args)
			switch {
			case err != nil:
				return err
			case !known && !IsHTTPTransportSubdirective(name):
				return unknown(rest, name)
			case !known:
				continue
			}
			rest.DeleteN(len(args) + 1)
		}
	}
	rest.Reset()
	return ht.UnmarshalCaddyfile(rest)
}
