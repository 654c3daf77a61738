// Command caddy is Caddy with the wechat gateway built in, plus the fake
// WeChat used by the demo, so `go run ./cmd/caddy run --config
// Caddyfile.example` works without xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-wechat/wechat"
	// The fake WeChat for the demo; never part of the module itself.
	_ "github.com/caddy-wechat/wechat/fakewechat"
)

func main() {
	caddycmd.Main()
}
