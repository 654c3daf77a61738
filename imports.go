package wechat

// Modules that live in packages of their own, registered with the root:
// a Caddy built with this module (xcaddy --with github.com/caddy-wechat/wechat)
// gets them all.
import (
	// wechat_push: WeChat's message pushes, verified, decrypted and
	// de-duplicated before the app.
	_ "github.com/caddy-wechat/wechat/push"
)
