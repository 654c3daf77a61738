package wechat

import (
	"context"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The limits' defaults apply to a zero setting only; a set value wins.
func TestRequestBodyLimitDefaults(t *testing.T) {
	var zero Transport
	if got := zero.maxBuffered(); got != gateway.DefaultMaxBuffered {
		t.Errorf("maxBuffered() = %d, want the default %d", got, gateway.DefaultMaxBuffered)
	}
	if got := zero.bodyReadTimeout(); got != gateway.DefaultBodyReadTimeout {
		t.Errorf("bodyReadTimeout() = %v, want the default %v", got, gateway.DefaultBodyReadTimeout)
	}
	if got := zero.maxReplay(); got != defaultMaxReplayBody {
		t.Errorf("maxReplay() = %d, want the default %d", got, defaultMaxReplayBody)
	}
	set := Transport{MaxBufferedBytes: 1, BodyReadTimeout: caddy.Duration(time.Nanosecond), MaxReplayBody: 1}
	if got := set.maxBuffered(); got != 1 {
		t.Errorf("maxBuffered() = %d, want the configured 1", got)
	}
	if got := set.bodyReadTimeout(); got != time.Nanosecond {
		t.Errorf("bodyReadTimeout() = %v, want the configured 1ns", got)
	}
	if got := set.maxReplay(); got != 1 {
		t.Errorf("maxReplay() = %d, want the configured 1", got)
	}
}

// LimitBodyIdle tightens Caddy's idle read timeout to body_read_timeout
// and never loosens it; an equal one is left alone (its MinRate window
// keeps its start).
func TestLimitBodyIdle(t *testing.T) {
	const d = 30 * time.Second
	start := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		want    time.Duration
		kept    bool // Start untouched: no override
	}{
		{"none", 0, d, false},
		{"looser", d + 1, d, false},
		{"equal", d, d, true},
		{"tighter", d - 1, d - 1, true},
	} {
		r := &caddyhttp.IdleTimeoutReader{Deadline: caddyhttp.IdleDeadline{Start: start, Timeout: tc.timeout, MinRate: 100}}
		ctx := caddyhttp.ContextWithIdleTimeouts(context.Background(), r, nil)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://api.weixin.qq.com/", nil)
		if err != nil {
			t.Fatal(err)
		}
		caddyServer{}.LimitBodyIdle(req, d)
		if r.Deadline.Timeout != tc.want || r.Deadline.MinRate != 100 {
			t.Errorf("%s: timeout %v, min rate %d; want %v, 100", tc.name, r.Deadline.Timeout, r.Deadline.MinRate, tc.want)
		}
		if kept := r.Deadline.Start.Equal(start); kept != tc.kept {
			t.Errorf("%s: start kept = %v, want %v", tc.name, kept, tc.kept)
		}
	}
	// No idle timeout in the context: nothing to do, and no panic.
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "https://api.weixin.qq.com/", nil)
	caddyServer{}.LimitBodyIdle(req, d)
}

// The account host's needles are cached until the current token or the ring changes, and the
// set includes the secret and every token the ring sent.
func TestNeedlesCache(t *testing.T) {
	const secret = "secret-secret-secret"
	tr := &Transport{secret: secret, sent: new(gateway.TokenRing), needleCache: new(atomic.Pointer[gateway.Needles])}
	a := (*accountHost)(tr).Needles("")
	if !slices.Contains(a.Values(), secret) {
		t.Fatalf("needles %q miss the secret", a.Values())
	}
	if b := (*accountHost)(tr).Needles(""); b != a {
		t.Errorf("unchanged ring: needles rebuilt")
	}
	e := &credential.Token{Value: "sent-token-sent-token"}
	tr.sent.Note(e)
	c := (*accountHost)(tr).Needles("")
	if c == a || !slices.Contains(c.Values(), e.Value) || !slices.Contains(c.Values(), secret) {
		t.Errorf("after a token was sent: same set %v, needles %q", c == a, c.Values())
	}
	if d := (*accountHost)(tr).Needles(""); d != c {
		t.Errorf("unchanged again: needles rebuilt")
	}
	// Without a cache, a fresh set each time, still complete.
	bare := &Transport{secret: secret}
	if x, y := (*accountHost)(bare).Needles(""), (*accountHost)(bare).Needles(""); x == y || !slices.Contains(x.Values(), secret) {
		t.Errorf("no cache: same set %v, needles %q", x == y, x.Values())
	}
}
