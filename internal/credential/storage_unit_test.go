package credential_test

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// memKV is an in-memory KeyValueStorage that records what the backend
// does to it: the paths it writes and the context each Unlock gets.
type memKV struct {
	mu        sync.Mutex
	m         map[string][]byte
	unlockErr error
	onStore   func()
	unlocks   []unlockSeen
}

// unlockSeen is an Unlock's context as it was during the call.
type unlockSeen struct {
	err  error
	left time.Duration // until its deadline; 0: none
}

func newMemKV() *memKV { return &memKV{m: map[string][]byte{}} }

func (s *memKV) Lock(ctx context.Context, name string) error { return ctx.Err() }
func (s *memKV) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := unlockSeen{err: ctx.Err()}
	if dl, ok := ctx.Deadline(); ok {
		u.left = time.Until(dl)
	}
	s.unlocks = append(s.unlocks, u)
	if s.unlockErr != nil {
		return s.unlockErr
	}
	return ctx.Err()
}
func (s *memKV) Store(_ context.Context, key string, v []byte) error {
	if s.onStore != nil {
		s.onStore()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = append([]byte(nil), v...)
	return nil
}
func (s *memKV) Load(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return v, nil
}
func (s *memKV) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
	return nil
}
func (s *memKV) paths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var p []string
	for k := range s.m {
		p = append(p, k)
	}
	return p
}

// stepClock is a storage clock the test moves by hand.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
	// then, if set, is handed out (once each, in order) before t.
	then []time.Time
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.then) > 0 {
		t := c.then[0]
		c.then = c.then[1:]
		return t
	}
	return c.t
}

func (c *stepClock) set(t time.Time, then ...time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t, c.then = t, then
}

// TestStorageKeyPathEscapes: every byte outside [A-Za-z0-9_-] is
// %-escaped and every byte inside is kept, so no key can make a
// subdirectory, a "..", or collide with another key's path. The key
// holds all 256 bytes, so each edge of each range is tried.
func TestStorageKeyPathEscapes(t *testing.T) {
	kv := newMemKV()
	st := credential.NewStorage(kv, "p/")
	var key, want strings.Builder
	want.WriteString("p/")
	const keep = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for c := 0; c < 256; c++ {
		key.WriteByte(byte(c))
		if strings.IndexByte(keep, byte(c)) >= 0 {
			want.WriteByte(byte(c))
		} else {
			want.WriteString("%" + strings.ToUpper(string("0123456789abcdef"[c>>4])+string("0123456789abcdef"[c&15])))
		}
	}
	if _, err := st.Add(context.Background(), key.String(), []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	got := kv.paths()
	if len(got) != 1 || got[0] != want.String() {
		t.Fatalf("path for all 256 bytes:\n got %q\nwant %q", got, want.String())
	}
}

// TestStorageShortKeyNoPrefix: a one-byte key under an empty prefix
// (the size hint for the path is then smallest) stores and reads back.
func TestStorageShortKeyNoPrefix(t *testing.T) {
	kv := newMemKV()
	st := credential.NewStorage(kv, "")
	ctx := context.Background()
	if ok, err := st.Add(ctx, "k", []byte("v"), 0); !ok || err != nil {
		t.Fatalf("Add = %v, %v", ok, err)
	}
	if v, _, err := st.Get(ctx, "k"); err != nil || string(v) != "v" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if p := kv.paths(); len(p) != 1 || p[0] != "k" {
		t.Fatalf("paths %q, want [k]", p)
	}
}

// TestStorageExpiresAtItsInstant: a value is gone at the very
// millisecond it expires, as in memcache and Redis, not one later.
func TestStorageExpiresAtItsInstant(t *testing.T) {
	clock := &stepClock{t: time.UnixMilli(1_000_000)}
	st := credential.NewStorage(newMemKV(), "")
	st.SetNow(clock.now)
	ctx := context.Background()
	if _, err := st.Add(ctx, "k", []byte("v"), time.Second); err != nil {
		t.Fatal(err)
	}
	clock.set(time.UnixMilli(1_000_999))
	if _, _, err := st.Get(ctx, "k"); err != nil {
		t.Fatalf("1 ms before expiry: %v", err)
	}
	clock.set(time.UnixMilli(1_001_000))
	if _, _, err := st.Get(ctx, "k"); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("at expiry: err %v, want ErrNotFound", err)
	}
}

// TestStorageCounterKeepsItsExpiry: a daily counter expires when its
// first increment said, however often it is incremented after: the
// remaining life is carried over in milliseconds, and a counter caught
// at its last instant still expires (it is never stored without one).
func TestStorageCounterKeepsItsExpiry(t *testing.T) {
	base := time.UnixMilli(5_000_000)
	at := func(ms int64) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	clock := &stepClock{t: base}
	st := credential.NewStorage(newMemKV(), "")
	st.SetNow(clock.now)
	ctx := context.Background()
	incr := func(want int64) {
		t.Helper()
		n, err := st.Incr(ctx, "c", time.Hour)
		if err != nil || n != want {
			t.Fatalf("Incr = %d, %v; want %d", n, err, want)
		}
	}
	incr(1) // expires at base+1h, whatever ttl later calls pass
	clock.set(at(1000))
	incr(2)
	clock.set(at(3_599_000))
	incr(3)
	clock.set(at(3_600_000))
	incr(1) // the hour is up: a new counter

	// Read live at its last millisecond, then the clock reaches the
	// expiry before the remaining life is worked out: 0 left.
	st2 := credential.NewStorage(newMemKV(), "")
	st2.SetNow(clock.now)
	clock.set(base)
	if _, err := st2.Incr(ctx, "c", time.Second); err != nil {
		t.Fatal(err)
	}
	clock.set(at(1000), at(999)) // load sees 999 ms, the TTL sum 1000
	if n, err := st2.Incr(ctx, "c", time.Second); n != 2 || err != nil {
		t.Fatalf("Incr = %d, %v; want 2", n, err)
	}
	clock.set(at(60_000))
	if n, err := st2.Incr(ctx, "c", time.Second); n != 1 || err != nil {
		t.Fatalf("a minute later Incr = %d, %v; want 1 (the old counter expired)", n, err)
	}
}

// TestStorageCounterRestartsOnZero: a counter key holding something
// that is not a positive count (here "0", never written by Incr) starts
// again at 1 with the caller's TTL, not the odd value's (none).
func TestStorageCounterRestartsOnZero(t *testing.T) {
	clock := &stepClock{t: time.UnixMilli(9_000_000)}
	st := credential.NewStorage(newMemKV(), "")
	st.SetNow(clock.now)
	ctx := context.Background()
	if _, err := st.Add(ctx, "c", []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Incr(ctx, "c", time.Second); n != 1 || err != nil {
		t.Fatalf("Incr = %d, %v; want 1", n, err)
	}
	clock.set(time.UnixMilli(9_002_000))
	if _, _, err := st.Get(ctx, "c"); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("2 s later: err %v, want ErrNotFound (the counter has the 1 s TTL)", err)
	}
}

// TestStorageUnlockOutlivesCaller: the storage lock is released with a
// context of its own (a few seconds), so a caller whose deadline ran out
// during the write does not leave the lock to go stale; and a failed
// unlock after a good write is reported, not swallowed.
func TestStorageUnlockOutlivesCaller(t *testing.T) {
	kv := newMemKV()
	st := credential.NewStorage(kv, "")
	ctx, cancel := context.WithCancel(context.Background())
	kv.onStore = cancel // the caller gives up during the write
	if _, err := st.Add(ctx, "k", []byte("v"), 0); err != nil {
		t.Fatalf("Add: %v", err)
	}
	kv.onStore = nil
	if len(kv.unlocks) != 1 {
		t.Fatalf("%d unlocks, want 1", len(kv.unlocks))
	}
	if u := kv.unlocks[0]; u.err != nil || u.left < time.Second {
		t.Fatalf("unlock saw err %v and %v left: want a live context with seconds left", u.err, u.left)
	}

	kv.unlockErr = errors.New("lock file gone")
	_, err := st.Add(context.Background(), "k2", []byte("v"), 0)
	if err == nil || !strings.Contains(err.Error(), "storage unlock") {
		t.Fatalf("Add with a failing unlock: %v, want the unlock error", err)
	}
}

// TestStorageLocalLocksDoNotGrow: the in-process lock table drops a
// path once no one holds or waits for it, so a gateway that touches
// ten thousand keys (authorizers) does not keep ten thousand entries;
// and it still serialises callers on one path.
func TestStorageLocalLocksDoNotGrow(t *testing.T) {
	st := credential.NewStorage(newMemKV(), "")
	ctx := context.Background()
	before := credential.LocalLockEntries()
	for i := 0; i < 50; i++ {
		if _, err := st.Incr(ctx, "n"+strings.Repeat("x", i), 0); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := st.Incr(ctx, "shared", 0); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n, err := st.Incr(ctx, "shared", 0); n != 21 || err != nil {
		t.Fatalf("shared counter = %d, %v; want 21 (increments lost)", n, err)
	}
	if after := credential.LocalLockEntries(); after > before {
		t.Fatalf("lock table grew from %d to %d entries", before, after)
	}
}
