// Package storetest is the conformance suite every credential.Backend
// passes, run against the real server, plus the fake WeChat token source
// and fake clock it runs on (no HTTP).
package storetest

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// Clock is a fake clock. It starts at the real time so that a real
// server's TTLs and the engine's idea of expiry roughly agree.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

func NewClock() *Clock { return &Clock{t: time.Now()} }

func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Sleep is a credential.Config.Sleep on the fake clock: it advances the
// clock by d, as if the caller had waited.
func (c *Clock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.Advance(d)
	return nil
}

func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Fake is a WeChat token endpoint that follows the rules of
// wechat-token-rules.md, for stable and classic tokens:
//   - stable returns the current token while it has more than 5 min
//     left, then a new one; force issues a new one at once and ends the
//     old one;
//   - classic issues a new token on every fetch, and the previous ones
//     keep working for 5 more minutes.
//
// It implements credential.Source, Prober and Forcer.
type Fake struct {
	Clock *Clock
	API   string // credential.APIStable or APIClassic

	Fetches, Forced, Probes atomic.Int64

	// Glitch makes WeChat reject every token (calls and probes).
	Glitch atomic.Bool
	// Hold, while non-nil, makes fetches wait for it to close (or ctx).
	Hold atomic.Pointer[chan struct{}]

	mu      sync.Mutex
	seq     int
	current string
	expires map[string]time.Time
	broken  map[string]bool
}

func NewFake(clock *Clock, api string) *Fake {
	return &Fake{Clock: clock, API: api, expires: map[string]time.Time{}, broken: map[string]bool{}}
}

func (f *Fake) CanForce() bool { return f.API == credential.APIStable }

func (f *Fake) newToken(now time.Time) string {
	f.seq++
	v := "TOK" + strconv.Itoa(f.seq) + "x" + strconv.FormatInt(now.UnixNano()%1e6, 10)
	f.expires[v] = now.Add(2 * time.Hour)
	f.current = v
	return v
}

func (f *Fake) Fetch(ctx context.Context, opt credential.FetchOptions) (*credential.Token, error) {
	if h := f.Hold.Load(); h != nil {
		select {
		case <-*h:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.Fetches.Add(1)
	now := f.Clock.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.expires[f.current]
	switch {
	case f.API == credential.APIClassic:
		for v, e := range f.expires {
			if e.After(now.Add(5 * time.Minute)) {
				f.expires[v] = now.Add(5 * time.Minute)
			}
		}
		f.newToken(now)
	case opt.Force:
		f.Forced.Add(1)
		delete(f.expires, f.current)
		f.newToken(now)
	case !ok || cur.Sub(now) <= 5*time.Minute:
		f.newToken(now)
	}
	left := int64(f.expires[f.current].Sub(now) / time.Second)
	return credential.NewToken(f.current, left, now, "fetch"), nil
}

// Valid reports how an API call sees tok now.
func (f *Fake) Valid(tok string) bool {
	if f.Glitch.Load() {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.expires[tok]
	return ok && !f.broken[tok] && f.Clock.Now().Before(e)
}

// Break makes calls reject tok while the token endpoint keeps returning
// it: the case that only force_refresh fixes.
func (f *Fake) Break(tok string) {
	f.mu.Lock()
	f.broken[tok] = true
	f.mu.Unlock()
}

// Call is an ordinary API call with tok: 0 or 40001.
func (f *Fake) Call(tok string) int {
	if f.Valid(tok) {
		return 0
	}
	return 40001
}

// Revoke ends tok at once (WeChat-side invalidation).
func (f *Fake) Revoke(tok string) {
	f.mu.Lock()
	delete(f.expires, tok)
	f.mu.Unlock()
}

func (f *Fake) Probe(ctx context.Context, t *credential.Token) (bool, error) {
	f.Probes.Add(1)
	return f.Valid(t.Value), nil
}

// Tickets is a ticket source on top of a token cache: it counts fetches
// and returns one ticket per token.
type Tickets struct {
	Tokens  *credential.Cache
	Clock   *Clock
	Fetches atomic.Int64
}

func (s *Tickets) Fetch(ctx context.Context, _ credential.FetchOptions) (*credential.Token, error) {
	t, err := s.Tokens.Token(ctx)
	if err != nil {
		return nil, err
	}
	n := s.Fetches.Add(1)
	return credential.NewToken("TICKET"+strconv.FormatInt(n, 10)+"-"+t.Value, 7200, s.Clock.Now(), "fetch"), nil
}
