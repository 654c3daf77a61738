package caddykit

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

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
		Server{}.LimitBodyIdle(req, d)
		if r.Deadline.Timeout != tc.want || r.Deadline.MinRate != 100 {
			t.Errorf("%s: timeout %v, min rate %d; want %v, 100", tc.name, r.Deadline.Timeout, r.Deadline.MinRate, tc.want)
		}
		if kept := r.Deadline.Start.Equal(start); kept != tc.kept {
			t.Errorf("%s: start kept = %v, want %v", tc.name, kept, tc.kept)
		}
	}
	// No idle timeout in the context: nothing to do, and no panic.
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "https://api.weixin.qq.com/", nil)
	Server{}.LimitBodyIdle(req, d)
}

// A kept body is found again in the same request's vars (reverse_proxy's
// retry), and nothing is found where none was kept.
func TestKeptBody(t *testing.T) {
	ctx := context.WithValue(context.Background(), caddyhttp.VarsCtxKey, map[string]any{})
	if _, ok := (Server{}).KeptBody(ctx); ok {
		t.Fatal("a body found before any was kept")
	}
	Server{}.KeepBody(ctx, []byte("body"))
	if b, ok := (Server{}).KeptBody(ctx); !ok || string(b) != "body" {
		t.Fatalf("kept body = %q, %v", b, ok)
	}
}
