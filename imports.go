package wechat

// The gateway's pluggable parts live in subpackages that register their
// Caddy modules in init; importing the root (as xcaddy's --with does)
// brings all of them, the way caddy-l4's imports.go and Caddy's
// modules/standard do.
import (
	// wechat_component, wechat_component_callback and the admin API's
	// authorizers view: the open platform (第三方平台).
	_ "github.com/caddy-wechat/wechat/component"
	// wechat_push: WeChat's message pushes, verified, decrypted and
	// de-duplicated before the app.
	_ "github.com/caddy-wechat/wechat/push"
	// wechat.stores.memcache, .redis, .sql, .storage
	_ "github.com/caddy-wechat/wechat/stores"
	// `caddy wechat status` and `caddy wechat doctor`.
	_ "github.com/caddy-wechat/wechat/wechatcmd"
)
