package stores

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memcachestore"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func init() {
	caddy.RegisterModule(Memcache{})
}

// Memcache is the store module wechat.stores.memcache:
//
//	store memcache {
//	    servers host:port ...
//	    prefix  wechat:
//	    timeout 100ms
//	}
//
// The old `memcache host:port` subdirective is its short form.
type Memcache struct {
	Servers []string       `json:"servers,omitempty"`
	Prefix  string         `json:"prefix,omitempty"`
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Memcache) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "wechat.stores.memcache", New: func() caddy.Module { return new(Memcache) }}
}

// Provision resolves placeholders ({env.*}, {file.*}) in the servers and
// prefix.
func (m *Memcache) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	for i, s := range m.Servers {
		m.Servers[i] = repl.ReplaceKnown(s, "")
	}
	m.Prefix = repl.ReplaceKnown(m.Prefix, "")
	return nil
}

// StoreID names the servers (sorted): no secret in it.
func (m *Memcache) StoreID() string {
	s := append([]string(nil), m.Servers...)
	sort.Strings(s)
	return "memcache:" + strings.Join(s, ",")
}

// OpenBackend opens a client of its own.
func (m *Memcache) OpenBackend() (credential.Backend, error) {
	if len(m.Servers) == 0 {
		return nil, fmt.Errorf("store memcache: no servers")
	}
	return memcachestore.New(m.Servers, m.OpTimeout())
}

// KeyPrefix is the prefix of every key.
func (m *Memcache) KeyPrefix() string {
	if m.Prefix == "" {
		return "wechat:"
	}
	return m.Prefix
}

// OpTimeout bounds one memcache call.
func (m *Memcache) OpTimeout() time.Duration {
	if m.Timeout > 0 {
		return time.Duration(m.Timeout)
	}
	return 100 * time.Millisecond
}

// UnmarshalCaddyfile reads the store block.
func (m *Memcache) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if args := d.RemainingArgs(); len(args) > 0 {
		m.Servers = append(m.Servers, args...)
	}
	for d.NextBlock(0) {
		name := d.Val()
		args := d.RemainingArgs()
		switch name {
		case "servers":
			if len(args) == 0 {
				return d.ArgErr()
			}
			m.Servers = append(m.Servers, args...)
		case "prefix":
			if len(args) != 1 {
				return d.ArgErr()
			}
			m.Prefix = args[0]
		case "timeout":
			if err := ParseDuration(d, args, &m.Timeout); err != nil {
				return err
			}
		default:
			return d.Errf("store memcache: unknown option %q", name)
		}
	}
	for _, s := range m.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return d.Errf("memcache server %q: %v (want host:port)", s, err)
		}
	}
	return nil
}

// ParseCaddyfile reads `store <name> { ... }` (d at store, args its
// arguments) into a module object for a `store` field: the module
// wechat.stores.<name> unmarshals its own block. The wechat parsers
// delete each subdirective's own line from the tokens they hand to
// reverse_proxy; this deletes the block.
func ParseCaddyfile(d *caddyfile.Dispenser, args []string) (json.RawMessage, error) {
	if len(args) != 1 {
		return nil, d.Errf("store: want one store name (memcache, redis, sql, storage, ...)")
	}
	mod, err := caddy.GetModule("wechat.stores." + args[0])
	if err != nil {
		return nil, d.Errf("store %s: %v", args[0], err)
	}
	u, ok := mod.New().(caddyfile.Unmarshaler)
	if !ok {
		return nil, d.Errf("store %s cannot be configured in the Caddyfile", args[0])
	}
	seg := d.NextSegment() // the name and its block
	if err := u.UnmarshalCaddyfile(caddyfile.NewDispenser(seg)); err != nil {
		return nil, err
	}
	d.DeleteN(len(seg) - 1)
	return caddyconfig.JSONModuleObject(u, "module", args[0], nil), nil
}

var (
	_ caddy.Provisioner     = (*Memcache)(nil)
	_ Provider              = (*Memcache)(nil)
	_ caddyfile.Unmarshaler = (*Memcache)(nil)
)
