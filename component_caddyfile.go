package wechat

import (
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("wechat_component", parseComponentCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("wechat_component", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterHandlerDirective("wechat_component_callback", parseComponentCallbackCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("wechat_component_callback", httpcaddyfile.Before, "reverse_proxy")
}

// componentOptions are the subdirectives of both directives, spelled as
// in wechat (the parser is shared): appid, secret, upstream, store,
// memcache, memcache_prefix, memcache_timeout, fetch_timeout, and, for
// the transport, dial_timeout, response_header_timeout, max_replay_body.
var componentOptions = map[string]bool{
	"appid": true, "secret": true, "upstream": true, "store": true, "memcache": true, "memcache_prefix": true,
	"memcache_timeout": true, "fetch_timeout": true, "dial_timeout": true, "response_header_timeout": true, "max_replay_body": true,
	"keep_caller_auth": true,
}

func (c *ComponentConfig) from(t *Transport) {
	c.AppID, c.Secret, c.TokenEndpoints, c.Store = t.AppID, t.Secret, t.TokenEndpoints, t.Store
	c.Memcache, c.MemcachePrefix, c.MemcacheTimeout, c.FetchTimeout = t.Memcache, t.MemcachePrefix, t.MemcacheTimeout, t.FetchTimeout
}

// parseComponentCaddyfile:
//
//	wechat_component [<matcher>] {
//	    appid    <component appid>          # required
//	    secret   <component secret>         # required; {env.*} / {file.*}
//	    upstream <url> [<url>...]           # default https://api.weixin.qq.com
//	    store    <name> { ... }             # durable store: ticket, tokens, refresh tokens
//	    memcache <host:port> [...]          # or the memcache short form (not durable)
//	    fetch_timeout <duration>
//	    max_replay_body <size>
//	    keep_caller_auth                    # pass Authorization/Cookie on; default: stripped
//	    # any other reverse_proxy subdirective is passed through
//	}
//
// Calls name the authorizer by the Wechat-Authorizer-Appid header or the
// /authorizer/{appid}/ path prefix; /cgi-bin/component/* calls without
// one get the component_access_token.
func parseComponentCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	d := h.Dispenser
	d.Next()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	t := newCaddyfileTransport()
	rest := h.NewFromNextSegment()
	for rest.Next() {
		for rest.NextBlock(0) {
			if rest.Nesting() != 1 {
				continue
			}
			name := rest.Val()
			args := rest.RemainingArgs()
			if name == "to" || name == "transport" {
				return nil, rest.Errf("%s is not allowed in wechat_component: use upstream", name)
			}
			if !componentOptions[name] {
				continue // reverse_proxy's
			}
			if _, err := t.parseOption(rest, name, args); err != nil {
				return nil, err
			}
			rest.DeleteN(len(args) + 1)
		}
	}
	bases, err := t.finishCaddyfile(d)
	if err != nil {
		return nil, err
	}
	ct := &ComponentTransport{HTTPTransport: t.HTTPTransport, MaxReplayBody: t.MaxReplayBody, KeepCallerAuth: t.KeepCallerAuth}
	ct.from(t)
	return reverseProxyTo(h, rest, bases, caddyconfig.JSONModuleObject(ct, "protocol", "wechat_component", nil))
}

// parseComponentCallbackCaddyfile:
//
//	wechat_component_callback [<matcher>] {
//	    appid    <component appid>          # required, as in wechat_component
//	    secret   <component secret>         # required
//	    token    <消息校验Token>              # required; {env.*}
//	    aes_key  <EncodingAESKey>           # required, 43 characters; {env.*}
//	    upstream / store / memcache / fetch_timeout   # as in wechat_component
//	    max_body <size>                     # default 64KiB
//	    max_skew <duration>                 # default 5m
//	}
func parseComponentCallbackCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	d := h.Dispenser
	d.Next()
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	t := new(Transport)
	cb := new(ComponentCallback)
	rest := h.NewFromNextSegment()
	for rest.Next() {
		for rest.NextBlock(0) {
			if rest.Nesting() != 1 {
				continue
			}
			if err := cb.parseOption(rest, t); err != nil {
				return nil, err
			}
		}
	}
	if t.AppID == "" || t.Secret == "" || cb.Token == "" || cb.AESKey == "" {
		return nil, d.Err("wechat_component_callback: appid, secret, token and aes_key are required")
	}
	cb.from(t)
	return cb, nil
}

// parseOption reads one subdirective of wechat_component_callback; the
// component's own are parsed as in wechat, into t.
func (cb *ComponentCallback) parseOption(d *caddyfile.Dispenser, t *Transport) error {
	name := d.Val()
	args := d.RemainingArgs()
	one := func(into *string) error {
		if len(args) != 1 {
			return d.ArgErr()
		}
		*into = args[0]
		return nil
	}
	switch name {
	case "token":
		return one(&cb.Token)
	case "aes_key":
		return one(&cb.AESKey)
	case "max_body":
		var s string
		if err := one(&s); err != nil {
			return err
		}
		n, err := humanize.ParseBytes(s)
		if err != nil {
			return d.Errf("max_body %q: %v", s, err)
		}
		cb.MaxBody = int64(n)
		return nil
	case "max_skew":
		return parseDuration(d, args, &cb.MaxSkew)
	case "appid", "secret", "upstream", "store", "memcache", "memcache_prefix", "memcache_timeout", "fetch_timeout":
		_, err := t.parseOption(d, name, args)
		return err
	}
	return d.Errf("wechat_component_callback: unknown subdirective %q", name)
}
