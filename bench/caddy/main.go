// Command caddy is ./cmd/caddy plus a counting file storage, for the
// bench's storage-store run; everything else is the same binary.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-wechat/wechat"
	_ "github.com/caddy-wechat/wechat/bench/countstorage"
	_ "github.com/caddy-wechat/wechat/fakewechat"
)

func main() {
	caddycmd.Main()
}
