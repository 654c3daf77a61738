package wechat

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddyserver/caddy/v2"
)

// StoreProvider is implemented by the modules in the wechat.stores
// namespace (memcache, redis, sql, storage, and any third party's). A
// store module only describes and opens a backend: the account that uses
// it owns the backend, so it outlives config reloads and is closed when
// the account goes away.
type StoreProvider interface {
	// StoreID names the store's configuration without any secret (no
	// password, no DSN credentials): accounts whose StoreID and key
	// prefix match share state, and a changed StoreID is a new account.
	StoreID() string

	// OpenBackend opens a new backend (its own connections).
	OpenBackend() (credential.Backend, error)
}

// Optional interfaces of a StoreProvider; the account uses them when
// present:
//
//	KeyPrefix() string         // prefix of every key ("wechat:" by default)
//	OpTimeout() time.Duration  // bound of one backend call (100 ms by default)
//	Durable() bool             // data survives a server restart: the account
//	                           // warms its cache from the store on provision

// loadStore loads a transport's or handler's store module from raw (its
// field named field, in the wechat.stores namespace), or builds a memcache
// store from the short form; nil for none. Every user of a store (the
// account, the open platform) opens it here.
func loadStore(ctx caddy.Context, owner any, field string, raw json.RawMessage, memcache []string, prefix string, timeout caddy.Duration) (StoreProvider, error) {
	if len(raw) > 0 {
		if len(memcache) > 0 {
			return nil, errors.New("give either store or memcache, not both")
		}
		mod, err := ctx.LoadModule(owner, field)
		if err != nil {
			return nil, fmt.Errorf("loading store: %v", err)
		}
		p, ok := mod.(StoreProvider)
		if !ok {
			return nil, fmt.Errorf("store module %T is not a StoreProvider", mod)
		}
		return p, nil
	}
	if len(memcache) > 0 {
		return &MemcacheStore{Servers: memcache, Prefix: prefix, Timeout: timeout}, nil
	}
	return nil, nil
}

// storeKey is what names a store's state in a pool key: its StoreID and
// key prefix ("" for none).
func storeKey(store StoreProvider) string {
	if store == nil {
		return ""
	}
	id := store.StoreID()
	if p, ok := store.(interface{ KeyPrefix() string }); ok {
		id += "|" + p.KeyPrefix()
	}
	return id
}

// openShared opens a new backend of store and puts the cluster protocol
// over it, with the store's optional settings (prefix, op timeout,
// durability) in opt.
func openShared(store StoreProvider, seal *credential.Sealer, opt credential.SharedOptions) (*credential.Shared, error) {
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
