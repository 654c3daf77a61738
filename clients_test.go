package wechat

import "github.com/caddyserver/caddy/v2"

// caddyLoad loads a config and returns the error instead of failing.
func caddyLoad(cfg []byte) error { return caddy.Load(cfg, true) }
