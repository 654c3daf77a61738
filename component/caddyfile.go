package component

import (
	"net/url"

	"github.com/caddy-wechat/wechat/caddykit"
	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("wechat_component", parseComponentCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("wechat_component", httpcaddyfile.Before, "reverse_proxy")
	httpcaddyfile.RegisterHandlerDirective("wechat_component_callback", parseComponentCallbackCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("wechat_component_callback", httpcaddyfile.Before, "reverse_proxy")
}

// options points the shared subdirectives at the component's own fields:
// the callback takes these, the transport these and its own.
func (c *ComponentConfig) options() caddykit.Options {
	return caddykit.Options{AppID: &c.AppID, Secret: &c.Secret, MemcachePrefix: &c.MemcachePrefix,
		TokenEndpoints: &c.TokenEndpoints, Memcache: &c.Memcache, MemcacheTimeout: &c.MemcacheTimeout,
		FetchTimeout: &c.FetchTimeout, Store: &c.Store}
}

// options of the transport: the component's, plus dial_timeout,
// response_header_timeout, max_replay_body and keep_caller_auth.
func (t *ComponentTransport) options() caddykit.Options {
	f := t.ComponentConfig.options()
	f.HTTP, f.MaxReplayBody, f.KeepCallerAuth = &t.HTTPTransport, &t.MaxReplayBody, &t.KeepCallerAuth
	return f
}

// finish checks what every component needs, as finishCaddyfile does for
// an account, and returns its upstreams.
func (c *ComponentConfig) finish(d *caddyfile.Dispenser) ([]*url.URL, error) {
	if c.AppID == "" {
		return nil, d.Err("appid is required")
	}
	if c.Secret == "" {
		return nil, d.Err("secret is required; write it as {env.*} or {file.*}")
	}
	bases, err := gateway.ParseUpstreams(c.TokenEndpoints)
	if err != nil {
		return nil, d.Err(err.Error())
	}
	return bases, nil
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
	ct := new(ComponentTransport)
	caddykit.SetHTTPDefaults(&ct.HTTPTransport) // the account's dial and header timeouts
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
			known, err := ct.options().Parse(rest, name, args)
			if err != nil {
				return nil, err
			}
			if !known {
				continue // reverse_proxy's
			}
			rest.DeleteN(len(args) + 1)
		}
	}
	bases, err := ct.finish(d)
	if err != nil {
		return nil, err
	}
	if bases[0].Scheme == "https" && ct.TLS == nil {
		ct.TLS = new(reverseproxy.TLSConfig)
	}
	return caddykit.ReverseProxyTo(h, rest, bases, caddyconfig.JSONModuleObject(ct, "protocol", "wechat_component", nil))
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
	cb := new(ComponentCallback)
	rest := h.NewFromNextSegment()
	for rest.Next() {
		for rest.NextBlock(0) {
			if rest.Nesting() != 1 {
				continue
			}
			if err := cb.parseOption(rest); err != nil {
				return nil, err
			}
		}
	}
	if cb.AppID == "" || cb.Secret == "" || cb.Token == "" || cb.AESKey == "" {
		return nil, d.Err("wechat_component_callback: appid, secret, token and aes_key are required")
	}
	if _, err := gateway.ParseUpstreams(cb.TokenEndpoints); err != nil {
		return nil, d.Err(err.Error())
	}
	return cb, nil
}

// parseOption reads one subdirective of wechat_component_callback; the
// component's own are parsed as in wechat_component.
func (cb *ComponentCallback) parseOption(d *caddyfile.Dispenser) error {
	name := d.Val()
	args := d.RemainingArgs()
	switch name {
	case "token":
		return caddykit.OneArg(d, args, &cb.Token)
	case "aes_key":
		return caddykit.OneArg(d, args, &cb.AESKey)
	case "max_body":
		n, err := caddykit.ParseSize(d, name, args)
		cb.MaxBody = n
		return err
	case "max_skew":
		return caddykit.ParseDuration(d, args, &cb.MaxSkew)
	}
	if known, err := cb.ComponentConfig.options().Parse(d, name, args); known {
		return err
	}
	return d.Errf("wechat_component_callback: unknown subdirective %q", name)
}

// UnmarshalCaddyfile reads the transport's block inside reverse_proxy, as
// the fastcgi transport's does:
//
//	reverse_proxy https://api.weixin.qq.com {
//	    transport wechat_component {
//	        appid  {env.COMPONENT_APPID}
//	        secret {env.COMPONENT_SECRET}
//	        # every subdirective of the wechat_component directive, and
//	        # every subdirective of the http transport (tls, keepalive, ...)
//	    }
//	}
//
// Without it the embedded HTTPTransport's unmarshaler would be promoted,
// and it knows no appid. Here `upstream` names only the token endpoints:
// keep it in step with reverse_proxy's upstreams.
func (t *ComponentTransport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	err := caddykit.UnmarshalTransport(d, &t.HTTPTransport, t.options().Parse, func(d *caddyfile.Dispenser, name string) error {
		return d.Errf("unknown subdirective %q: it is not a transport wechat_component subdirective, nor one of the http transport's", name)
	})
	if err != nil {
		return err
	}
	bases, err := t.finish(d)
	if err != nil {
		return err
	}
	if bases[0].Scheme == "https" && t.TLS == nil {
		t.TLS = new(reverseproxy.TLSConfig)
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*ComponentTransport)(nil)
