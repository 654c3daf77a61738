// Package stores holds the wechat.stores.* Caddy modules (memcache,
// redis, sql, storage) and the code every user of a store opens it
// with: Load (module or memcache short form), Key (what names its state
// in a pool key) and Open (a backend under the cluster protocol). The
// root package blank-imports it, so every build with the gateway has them.
package stores

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Provider is implemented by the modules in the wechat.stores
// namespace (memcache, redis, sql, storage, and any third party's). A
// store module only describes and opens a backend: the account that uses
// it owns the backend, so it outlives config reloads and is closed when
// the account goes away.
type Provider interface {
	// StoreID names the store's configuration without any secret (no
	// password, no DSN credentials): accounts whose StoreID and key
	// prefix match share state, and a changed StoreID is a new account.
	StoreID() string

	// OpenBackend opens a new backend (its own connections).
	OpenBackend() (credential.Backend, error)
}

// Optional interfaces of a Provider; the account uses them when
// present:
//
//	KeyPrefix() string         // prefix of every key ("wechat:" by default)
//	OpTimeout() time.Duration  // bound of one backend call (100 ms by default)
//	Durable() bool             // data survives a server restart: the account
//	                           // warms its cache from the store on provision

// Load loads a transport's or handler's store module from raw (its
// field named field, in the wechat.stores namespace), or builds a memcache
// store from the short form; nil for none. Every user of a store (the
// account, the open platform) opens it here.
func Load(ctx caddy.Context, owner any, field string, raw json.RawMessage, memcache []string, prefix string, timeout caddy.Duration) (Provider, error) {
	if len(raw) > 0 {
		if len(memcache) > 0 {
			return nil, errors.New("give either store or memcache, not both")
		}
		mod, err := ctx.LoadModule(owner, field)
		if err != nil {
			return nil, fmt.Errorf("loading store: %v", err)
		}
		p, ok := mod.(Provider)
		if !ok {
			return nil, fmt.Errorf("store module %T is not a Provider", mod)
		}
		return p, nil
	}
	if len(memcache) > 0 {
		return &Memcache{Servers: memcache, Prefix: prefix, Timeout: timeout}, nil
	}
	return nil, nil
}

// Key is what names a store's state in a pool key: its StoreID and
// key prefix ("" for none).
func Key(store Provider) string {
	if store == nil {
		return ""
	}
	id := store.StoreID()
	if p, ok := store.(interface{ KeyPrefix() string }); ok {
		id += "|" + p.KeyPrefix()
	}
	return id
}

// Open opens a new backend of store and puts the cluster protocol
// over it, with the store's optional settings (prefix, op timeout,
// durability) in opt.
func Open(store Provider, seal *credential.Sealer, opt credential.SharedOptions) (*credential.Shared, error) {
	b, err := store.OpenBackend()
	if err != nil {
		return nil, err
	}
	if p, ok := store.(interface{ KeyPrefix() string }); ok {
		opt.Prefix = p.KeyPrefix()
	}
	if p, ok := store.(interface{ OpTimeout() time.Duration }); ok {
		opt.OpTimeout = p.OpTimeout()
	}
	if p, ok := store.(interface{ Durable() bool }); ok {
		opt.Durable = p.Durable()
	}
	return credential.NewShared(b, seal, opt), nil
}

// ParseDuration reads the one duration argument of an option, as every
// wechat directive spells it: a Go duration, or a bare number of seconds.
func ParseDuration(d *caddyfile.Dispenser, args []string, into *caddy.Duration) error {
	if len(args) != 1 {
		return d.ArgErr()
	}
	v, err := caddy.ParseDuration(args[0])
	if err != nil {
		if n, e := strconv.Atoi(args[0]); e == nil {
			v = time.Duration(n) * time.Second
		} else {
			return d.Errf("bad duration %q: %v", args[0], err)
		}
	}
	*into = caddy.Duration(v)
	return nil
}
