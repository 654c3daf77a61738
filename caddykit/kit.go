// Package caddykit is the Caddy side that the account modules (the root
// package) and the open platform's (component/) share: the reverse_proxy a
// gateway directive expands into, the Caddyfile options every directive
// spells the same way, Caddy as the request path's gateway.Server, the
// one renewal scheduler of the process, and the scrub counter. It exists
// so that component/ never imports the root, and outside internal/ so
// that every internal package (the request path, internal/gateway; the
// engine, internal/credential) stays free of Caddy. It is for this
// module's own packages: its API may change without notice.
package caddykit

import (
	"github.com/caddy-wechat/wechat/internal/credential"
)

// Scheduler renews every account's credentials ahead of expiry, with one
// goroutine for all of them (none while no account holds a token).
var Scheduler = credential.NewScheduler(nil)

// DefaultMinTokenAge is min_token_age's default. A variable so that the
// tests of a whole Caddy, which revoke tokens at will, can set it to -1.
var DefaultMinTokenAge = credential.DefaultMinAge

// DefaultMaxReplayBody is max_replay_body's default: the largest body kept
// to replay a call after a fresh token.
const DefaultMaxReplayBody = 10 << 20
