package push

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("wechat_push", parseCaddyfile)
	// Ordered like wechat (in front of reverse_proxy), so no `order`
	// option is needed; and in front of respond too (the only terminal
	// directive between them in Caddy's order), so that a `respond` in
	// the same block can never answer WeChat before the push is checked.
	httpcaddyfile.RegisterDirectiveOrder("wechat_push", httpcaddyfile.Before, "respond")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up wechat_push:
//
//	wechat_push [<matcher>] {
//	    kind             official_account|mini_program|wecom   # default official_account
//	    appid            <appid>          # official account / mini program
//	    corpid           <corpid>         # WeCom self-built app
//	    suite_id         <suite id>       # WeCom third-party app
//	    token            <token>          # write it as {env.*} or {file.*}
//	    encoding_aes_key <43 characters>  # write it as {env.*} or {file.*}
//	    mode             safe|compatible|plain   # default safe with a key, plain without
//	    format           xml|json         # a mini program's data format; default xml
//	    original_id      <gh_…>           # ToUserName every message must carry
//	    agent_id         <AgentID>        # WeCom: this app only
//	    max_body         <size>           # default 64KiB
//	    max_skew         <duration>       # timestamp window either way; default 5m
//	    app_timeout      <duration>       # default 13s
//	    store            <module> { ... } # de-duplicate across a cluster (memcache, redis, sql, storage)
//	}
func (m *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		name := d.Val()
		if name == "store" {
			if !d.NextArg() {
				return d.Errf("store: want a store name (memcache, redis, sql, storage, ...)")
			}
			mod, err := caddy.GetModule("wechat.stores." + d.Val())
			if err != nil {
				return d.Errf("store %s: %v", d.Val(), err)
			}
			u, ok := mod.New().(caddyfile.Unmarshaler)
			if !ok {
				return d.Errf("store %s cannot be configured in the Caddyfile", d.Val())
			}
			modName := d.Val()
			if err := u.UnmarshalCaddyfile(caddyfile.NewDispenser(d.NextSegment())); err != nil {
				return err
			}
			m.Store = caddyconfig.JSONModuleObject(u, "module", modName, nil)
			continue
		}
		var v string
		if !d.Args(&v) {
			return d.ArgErr()
		}
		if d.NextArg() {
			return d.Errf("%s takes one value", name)
		}
		switch name {
		case "kind":
			m.Kind = v
		case "appid":
			m.AppID = v
		case "corpid":
			m.CorpID = v
		case "suite_id":
			m.SuiteID = v
		case "token":
			m.Token = v
		case "encoding_aes_key":
			m.EncodingAESKey = v
		case "mode":
			m.Mode = v
		case "format":
			m.Format = v
		case "original_id":
			m.OriginalID = v
		case "agent_id":
			m.AgentID = v
		case "max_body":
			n, err := humanize.ParseBytes(v)
			if err != nil || n == 0 || n > 16<<20 {
				return d.Errf("max_body %q: want a size up to 16MiB", v)
			}
			m.MaxBody = int64(n)
		case "max_skew", "app_timeout":
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("%s %q: want a duration", name, v)
			}
			if name == "max_skew" {
				m.MaxSkew = caddy.Duration(dur)
			} else {
				m.AppTimeout = caddy.Duration(dur)
			}
		default:
			return d.Errf("unknown subdirective %q: wechat_push takes %s", name, subdirectives)
		}
	}
	return nil
}

const subdirectives = "kind appid corpid suite_id token encoding_aes_key mode format original_id agent_id max_body max_skew app_timeout store"

var _ caddyfile.Unmarshaler = (*Handler)(nil)
