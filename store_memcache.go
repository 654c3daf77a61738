package wechat

import (
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
	caddy.RegisterModule(MemcacheStore{})
}

// MemcacheStore is the store module wechat.stores.memcache:
//
//	store memcache {
//	    servers host:port ...
//	    prefix  wechat:
//	    timeout 100ms
//	}
//
// The old `memcache host:port` subdirective is its short form.
type MemcacheStore struct {
	Servers []string       `json:"servers,omitempty"`
	Prefix  string         `json:"prefix,omitempty"`
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (MemcacheStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "wechat.stores.memcache", New: func() caddy.Module { return new(MemcacheStore) }}
}

// Provision resolves placeholders ({env.*}, {file.*}) in the servers and
// prefix.
func (m *MemcacheStore) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	for i, s := range m.Servers {
		m.Servers[i] = repl.ReplaceKnown(s, "")
	}
	m.Prefix = repl.ReplaceKnown(m.Prefix, "")
	return nil
}

// StoreID names the servers (sorted): no secret in it.
func (m *MemcacheStore) StoreID() string {
	s := append([]string(nil), m.Servers...)
	sort.Strings(s)
	return "memcache:" + strings.Join(s, ",")
}

// OpenBackend opens a client of its own.
func (m *MemcacheStore) OpenBackend() (credential.Backend, error) {
	if len(m.Servers) == 0 {
		return nil, fmt.Errorf("store memcache: no servers")
	}
	return memcachestore.New(m.Servers, m.OpTimeout())
}

// KeyPrefix is the prefix of every key.
func (m *MemcacheStore) KeyPrefix() string {
	if m.Prefix == "" {
		return "wechat:"
	}
	return m.Prefix
}

// OpTimeout bounds one memcache call.
func (m *MemcacheStore) OpTimeout() time.Duration {
	if m.Timeout > 0 {
		return time.Duration(m.Timeout)
	}
	return 100 * time.Millisecond
}

// UnmarshalCaddyfile reads the store block.
func (m *MemcacheStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
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
			if err := parseDuration(d, args, &m.Timeout); err != nil {
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

// parseStore reads `store <name> { ... }` into t.Store: the module
// wechat.stores.<name> unmarshals its own block.
func (t *Transport) parseStore(d *caddyfile.Dispenser, args []string) error {
	if len(args) != 1 {
		return d.Errf("store: want one store name (memcache, redis, sql, storage, ...)")
	}
	mod, err := caddy.GetModule("wechat.stores." + args[0])
	if err != nil {
		return d.Errf("store %s: %v", args[0], err)
	}
	u, ok := mod.New().(caddyfile.Unmarshaler)
	if !ok {
		return d.Errf("store %s cannot be configured in the Caddyfile", args[0])
	}
	seg := d.NextSegment() // the name and its block
	if err := u.UnmarshalCaddyfile(caddyfile.NewDispenser(seg)); err != nil {
		return err
	}
	// The wechat parser deletes each subdirective's own line from the
	// tokens it hands to reverse_proxy; delete the block here.
	d.DeleteN(len(seg) - 1)
	t.Store = caddyconfig.JSONModuleObject(u, "module", args[0], nil)
	return nil
}

var (
	_ caddy.Provisioner     = (*MemcacheStore)(nil)
	_ StoreProvider         = (*MemcacheStore)(nil)
	_ caddyfile.Unmarshaler = (*MemcacheStore)(nil)
)
