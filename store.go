package wechat

import "github.com/caddy-wechat/wechat/internal/credential"

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
