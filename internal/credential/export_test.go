package credential

import (
	"context"
	"time"
)

// Settle runs every due renewal on the fake clock and returns once none
// is due and none is in flight.
func (s *Scheduler) Settle() {
	for {
		s.mu.Lock()
		due := len(s.h) > 0 && !s.h[0].at.After(s.now())
		s.mu.Unlock()
		switch {
		case due:
			s.runDue()
		case s.ticking.Load() == 0:
			s.mu.Lock()
			due = len(s.h) > 0 && !s.h[0].at.After(s.now())
			s.mu.Unlock()
			if !due && s.ticking.Load() == 0 {
				return
			}
		default:
			time.Sleep(50 * time.Microsecond)
		}
	}
}

func (a *Authorizer) Unsaved() bool { return a.src.unsaved.Load() != nil }

// Test hooks.
func (s *Shared) Do(ctx context.Context, op string, f func(context.Context) error) error {
	return s.do(ctx, op, f)
}
func (s *Scheduler) Poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}
func (s *Scheduler) Wait()          { s.wg.Wait() }
func (c *Cache) Tick()              { c.tick() }
func (c *Cache) RenewAt() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.renewAt }

func (c *Cache) Publish(t *Token)                     { c.publish(t) }
func (c *Cache) SpendForce(ctx context.Context) error { return c.spend(ctx, true) }

func (c *Cache) Next() time.Time { return c.next() }

// MaxBody is the largest token answer read.
const MaxBody = maxBody

// SealClaim is a lease or mark as an instance of this account writes it,
// holding until until: for tests that plant an honest peer's lease.
func (s *Shared) SealClaim(key string, until time.Time) []byte { return s.sealClaim(key, until) }

// Claim is claim, for the tests of a CompareAndSwap lost to a peer.
func (s *Shared) Claim(ctx context.Context, key string, ttl time.Duration, bound time.Time) ([]byte, bool, time.Time, error) {
	return s.claim(ctx, key, ttl, bound)
}
