package wechat

import (
	"github.com/caddy-wechat/wechat/component"
	"github.com/caddy-wechat/wechat/stores"
)

// Names that moved to subpackages, kept for Go users for one release
// (see README, "Moved packages").
type (
	// StoreProvider is stores.Provider.
	StoreProvider = stores.Provider
	// MemcacheStore is stores.Memcache (wechat.stores.memcache).
	MemcacheStore = stores.Memcache
	// RedisStore is stores.Redis (wechat.stores.redis).
	RedisStore = stores.Redis
	// SQLStore is stores.SQL (wechat.stores.sql).
	SQLStore = stores.SQL
	// StorageStore is stores.Storage (wechat.stores.storage).
	StorageStore = stores.Storage
	// ComponentConfig is component.ComponentConfig.
	ComponentConfig = component.ComponentConfig
	// ComponentTransport is component.ComponentTransport
	// (http.reverse_proxy.transport.wechat_component).
	ComponentTransport = component.ComponentTransport
	// ComponentCallback is component.ComponentCallback
	// (http.handlers.wechat_component_callback).
	ComponentCallback = component.ComponentCallback
)

// AuthorizerHeader is component.AuthorizerHeader.
const AuthorizerHeader = component.AuthorizerHeader
