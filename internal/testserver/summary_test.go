package testserver

import (
	"strings"
	"testing"
)

func TestSummaryNamesSkips(t *testing.T) {
	skips.Lock()
	saved := skips.tests
	skips.tests = nil
	skips.Unlock()
	t.Cleanup(func() { skips.Lock(); skips.tests = saved; skips.Unlock() })
	if s := Summary(); s != "" {
		t.Fatalf("summary with no skips: %q", s)
	}
	Note("memcached", "TestA")
	Note("memcached", "TestB")
	Note("redis-server", "TestC")
	s := Summary()
	for _, want := range []string{"SKIPPED 3 TESTS", "memcached (2: TestA, TestB)", "redis-server (1: TestC)"} {
		if !strings.Contains(s, want) {
			t.Fatalf("summary %q lacks %q", s, want)
		}
	}
}
