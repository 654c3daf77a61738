package caddykit

import (
	"context"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// replayVar keeps a buffered request body in the request's vars, so that
// when reverse_proxy retries the request against the next upstream (after a
// dial error or a retry_match), the body this transport already drained is
// sent again instead of an empty one.
const replayVar = "wechat.replay_body"

// Server is Caddy as the loop's gateway.Server: a drained body is
// kept in the request's vars for reverse_proxy's retry, and the body's
// idle limit tightens Caddy's own read deadline.
type Server struct{}

func (Server) KeptBody(ctx context.Context) ([]byte, bool) {
	b, ok := caddyhttp.GetVar(ctx, replayVar).([]byte)
	return b, ok
}

func (Server) KeepBody(ctx context.Context, b []byte) { caddyhttp.SetVar(ctx, replayVar, b) }

// LimitBodyIdle makes the server abort this request's body when it makes
// no progress for d. Caddy already applies its read_idle_timeout (1 min by
// default) closest to the connection, where a wrapper of ours could not
// win, so this tightens that one (and never loosens it). Caddy takes care
// of HTTP/2, where a deadline must not outlive a read.
func (Server) LimitBodyIdle(req *http.Request, d time.Duration) {
	r, _ := caddyhttp.IdleTimeoutsFromContext(req.Context())
	if r == nil || (r.Deadline.Timeout > 0 && r.Deadline.Timeout <= d) {
		return
	}
	r.Override(d, r.Deadline.MinRate) // per request: no need to restore
}
