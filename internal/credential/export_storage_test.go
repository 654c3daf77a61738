package credential

import "time"

// SetNow gives a Storage a test clock.
func (st *Storage) SetNow(now func() time.Time) { st.now = now }

// LocalLockEntries is how many storage paths this process's lock table
// holds: none once every lock is released.
func LocalLockEntries() int {
	localLocks.mu.Lock()
	defer localLocks.mu.Unlock()
	return len(localLocks.m)
}
