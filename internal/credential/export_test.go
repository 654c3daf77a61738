package credential

import (
	"context"
	"time"
)

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
