package componentcb

import "time"

// Test hooks of the replay guard.
const ReplayMax = replayMax

func (g *ReplayGuard) Remember(key string, now time.Time, skew time.Duration) bool {
	return g.remember(key, now, skew)
}
func (g *ReplayGuard) Forget(key string) { g.forget(key) }

// Size is the marks in the map and in the FIFO; Steps the FIFO slots
// examined or moved so far.
func (g *ReplayGuard) Size() (marks, fifo, steps int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.seen), g.n, g.steps
}
