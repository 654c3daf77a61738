package wechat

// Packages every Caddy built with the module gets.
import (
	// `caddy wechat status` and `caddy wechat doctor`.
	_ "github.com/caddy-wechat/wechat/wechatcmd"
)
