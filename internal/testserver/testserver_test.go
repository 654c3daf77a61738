package testserver

import (
	"sync"
	"testing"
	"time"
)

// TestStartAll starts one of each server, in parallel as the store tests
// do, and reports how long each took: the whole set should be up in
// seconds (the SQL data directories come from a per-machine template).
func TestStartAll(t *testing.T) {
	starts := map[string]func(testing.TB) *Server{
		"memcached": Memcached, "redis": Redis, "mariadb": MariaDB, "postgres": Postgres,
	}
	var mu sync.Mutex
	took := map[string]time.Duration{}
	t0 := time.Now()
	for name, start := range starts {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			t1 := time.Now()
			s := start(t)
			d := time.Since(t1)
			mu.Lock()
			took[name] = d
			mu.Unlock()
			t.Logf("%s up on %s in %v", name, s.Addr, d.Round(time.Millisecond))
			s.Kill(t)
			t1 = time.Now()
			s.Restart(t)
			t.Logf("%s restarted in %v", name, time.Since(t1).Round(time.Millisecond))
		})
	}
	t.Cleanup(func() { t.Logf("all four up and restarted in %v", time.Since(t0).Round(time.Millisecond)) })
}
