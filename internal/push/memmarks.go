package push

import (
	"context"
	"sync"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// Bounds of the in-process marks. Only correctly signed pushes make a
// mark, so only WeChat (or a holder of the token) can fill them; full,
// they drop the oldest mark first, which is also the first to expire.
const (
	DefaultMemEntries = 100_000
	DefaultMemBytes   = 32 << 20
)

// MemMarks is Marks in one process: a map plus a FIFO ring of its keys,
// so inserting and evicting are O(1) and memory is bounded by count and
// by bytes.
type MemMarks struct {
	mu       sync.Mutex
	now      func() time.Time
	m        map[string]*memEntry
	ring     []memSlot
	head, n  int
	bytes    int
	maxBytes int
	seq      uint64
}

type memEntry struct {
	v   []byte
	ver uint64
	exp time.Time
	gen uint64 // the ring slot that owns the entry
}

type memSlot struct {
	key string
	gen uint64
}

// NewMemMarks bounds the marks to entries and bytes (0: the defaults).
func NewMemMarks(entries, bytes int, now func() time.Time) *MemMarks {
	if entries <= 0 {
		entries = DefaultMemEntries
	}
	if bytes <= 0 {
		bytes = DefaultMemBytes
	}
	if now == nil {
		now = time.Now
	}
	return &MemMarks{now: now, m: map[string]*memEntry{}, ring: make([]memSlot, entries), maxBytes: bytes}
}

// Len is the number of marks held, live or expired but not yet dropped.
func (s *MemMarks) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Bytes is the size of the values held.
func (s *MemMarks) Bytes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

func (s *MemMarks) live(key string) *memEntry {
	e := s.m[key]
	if e == nil {
		return nil
	}
	if !s.now().Before(e.exp) {
		s.drop(key, e)
		return nil
	}
	return e
}

func (s *MemMarks) drop(key string, e *memEntry) {
	delete(s.m, key)
	s.bytes -= len(key) + len(e.v)
}

// evictOldest pops the ring's oldest slot, dropping its entry if the
// slot still owns it (a key re-added later has a newer slot).
func (s *MemMarks) evictOldest() {
	sl := s.ring[s.head]
	s.ring[s.head] = memSlot{}
	s.head = (s.head + 1) % len(s.ring)
	s.n--
	if e := s.m[sl.key]; e != nil && e.gen == sl.gen {
		s.drop(sl.key, e)
	}
}

// Get implements Marks.
func (s *MemMarks) Get(_ context.Context, key string) ([]byte, credential.Version, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.live(key)
	if e == nil {
		return nil, nil, credential.ErrNotFound
	}
	return e.v, e.ver, nil
}

// Add implements Marks.
func (s *MemMarks) Add(_ context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live(key) != nil {
		return false, nil
	}
	size := len(key) + len(value)
	for s.n > 0 && (s.n == len(s.ring) || s.bytes+size > s.maxBytes) {
		s.evictOldest()
	}
	s.seq++
	s.ring[(s.head+s.n)%len(s.ring)] = memSlot{key: key, gen: s.seq}
	s.n++
	s.m[key] = &memEntry{v: value, ver: s.seq, exp: s.now().Add(ttl), gen: s.seq}
	s.bytes += size
	return true, nil
}

// CompareAndSwap implements Marks. The entry keeps its place in the
// ring: its mark's life is counted from its first delivery.
func (s *MemMarks) CompareAndSwap(_ context.Context, key string, ver credential.Version, value []byte, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.live(key)
	if v, ok := ver.(uint64); e == nil || !ok || v != e.ver {
		return false, nil
	}
	s.bytes += len(value) - len(e.v)
	s.seq++
	e.v, e.ver, e.exp = value, s.seq, s.now().Add(ttl)
	return true, nil
}
