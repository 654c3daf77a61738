package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	randv2 "math/rand/v2"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// KeyValueStorage is the part of Caddy's certmagic.Storage that the
// storage backend uses; certmagic.Storage satisfies it, and this package
// stays free of Caddy.
type KeyValueStorage interface {
	Lock(ctx context.Context, name string) error
	Unlock(ctx context.Context, name string) error
	Store(ctx context.Context, key string, value []byte) error
	Load(ctx context.Context, key string) ([]byte, error)
	Delete(ctx context.Context, key string) error
}

// Storage is a Backend over Caddy's storage (file_system by default, or
// whatever the cluster shares certificates through). That storage has
// neither TTLs nor compare-and-swap, so each value sits in an envelope
// with its expiry and version, and every read-modify-write runs under
// the storage's own lock for the key: the lock is held for one Load and
// one Store, never across a token fetch.
//
// A peer holding a lock is contention, not an outage. certmagic's locks
// poll once a second; Storage polls them itself, every lockTry, and
// waits for a peer's lock up to LockWait (as long as an honest lease
// lives), not a store call's timeout. A write that found the lock held
// all that time answers ErrBusy, which never opens the engine's breaker.
// A hung storage is caught by its reads, which take no lock.
//
// Expired files are deleted by a bounded sweep (sweepBatch files at most,
// once per sweepEvery, piggy-backed on writes) when the storage can List.
//
// Expiry is on each instance's clock: keep the clocks in sync (NTP).
type Storage struct {
	s        KeyValueStorage
	prefix   string
	now      func() time.Time
	lockWait time.Duration

	sweepMu   sync.Mutex
	nextSweep time.Time
	sweeping  sync.WaitGroup
	cursor    int // where the next sweep starts in the listing
}

// Lock polling and the sweep.
const (
	// DefaultLockWait is an honest lease's life with the default
	// fetch_timeout: no write waits longer for a peer's lock.
	DefaultLockWait = DefaultFetchTimeout + leaseMargin
	lockTry         = 100 * time.Millisecond // one attempt; certmagic's own poll is 1 s
	lockJitter      = 20 * time.Millisecond
	sweepEvery      = time.Minute
	sweepBatch      = 256
	sweepTimeout    = 10 * time.Second
)

// NewStorage stores every key under prefix, a storage path such as
// "wechat/".
func NewStorage(s KeyValueStorage, prefix string) *Storage {
	return &Storage{s: s, prefix: prefix, now: time.Now, lockWait: DefaultLockWait}
}

// LockWait is how long a write may wait for a peer's lock. The engine
// gives each write this on top of its op timeout.
func (st *Storage) LockWait() time.Duration { return st.lockWait }

// SetLockWait changes LockWait (d > 0), e.g. to fetch_timeout + 2 s.
func (st *Storage) SetLockWait(d time.Duration) {
	if d > 0 {
		st.lockWait = d
	}
}

// storageEnvelope is what a stored file holds. Ver counts writes from a
// random start, so a deleted and re-created key gets new versions.
type storageEnvelope struct {
	Value     []byte `json:"value"`
	Ver       uint64 `json:"ver"`
	ExpiresAt int64  `json:"expires_at,omitempty"` // unix ms; 0: never
}

// keyPath maps a key to one storage path under the prefix: anything but
// letters, digits, '-' and '_' is %-escaped, so no key makes a
// subdirectory or a "..".
func (st *Storage) keyPath(key string) string {
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(st.prefix)+len(key)+8)
	b = append(b, st.prefix...)
	for i := 0; i < len(key); i++ {
		c := key[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' {
			b = append(b, c)
			continue
		}
		b = append(b, '%', hex[c>>4], hex[c&15])
	}
	return string(b)
}

// load returns the envelope under path (nil: missing, expired or not an
// envelope). The expired one is returned too, for its version.
func (st *Storage) load(ctx context.Context, path string) (env *storageEnvelope, live bool, err error) {
	raw, err := st.s.Load(ctx, path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("storage load: %w", err)
	}
	env = new(storageEnvelope)
	if json.Unmarshal(raw, env) != nil {
		return nil, false, nil // foreign or corrupt: a miss, overwritten by the next write
	}
	return env, env.ExpiresAt == 0 || env.ExpiresAt > st.now().UnixMilli(), nil
}

func (st *Storage) store(ctx context.Context, path string, old *storageEnvelope, value []byte, ttl time.Duration) error {
	env := storageEnvelope{Value: value, Ver: randomUint64()}
	if old != nil {
		env.Ver = old.Ver + 1
	}
	if ttl > 0 {
		env.ExpiresAt = st.now().Add(ttl).UnixMilli()
	}
	raw, err := json.Marshal(env)
	if err != nil {
		return err
	}
	if err := st.s.Store(ctx, path, raw); err != nil {
		return fmt.Errorf("storage store: %w", err)
	}
	return nil
}

// locked runs fn under the storage lock for path. An in-process mutex
// comes first, so instances in one process queue in memory instead of
// polling the storage's lock. Waiting for either ends after LockWait
// with ErrBusy; the ctx left after the wait is fn's.
func (st *Storage) locked(ctx context.Context, path string, fn func() error) error {
	defer st.maybeSweep()
	return st.lockedNoSweep(ctx, path, fn)
}

func (st *Storage) lockedNoSweep(ctx context.Context, path string, fn func() error) error {
	lctx, cancel := context.WithTimeout(ctx, st.lockWait)
	defer cancel()
	unlockLocal, err := localLocks.lock(lctx, path)
	if err != nil {
		return busy(ctx, err)
	}
	defer unlockLocal()
	if err := st.lock(ctx, lctx, path); err != nil {
		return err
	}
	ferr := fn()
	// Unlock even when ctx has run out, or the next caller waits for the
	// lock to go stale.
	uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer ucancel()
	if err := st.s.Unlock(uctx, path); err != nil && ferr == nil {
		ferr = fmt.Errorf("storage unlock: %w", err)
	}
	return ferr
}

// busy maps a lock wait that ran out to ErrBusy; a caller that went away
// keeps its own error.
func busy(ctx context.Context, err error) error {
	if ctx.Err() == context.Canceled {
		return ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("storage lock: %w", ErrBusy)
	}
	return err
}

// lock takes the storage's lock for path, one short attempt at a time
// until lctx ends. An attempt that runs out of its time found the lock
// held (certmagic's Lock returns at once when it gets the lock, and
// otherwise waits for its poll or the context); an attempt that fails
// otherwise is an error, given two more tries (a lock file being written
// can read as garbage).
func (st *Storage) lock(ctx, lctx context.Context, path string) error {
	failures := 0
	for {
		tctx, cancel := context.WithTimeout(lctx, lockTry)
		err := st.s.Lock(tctx, path)
		held := tctx.Err() != nil
		cancel()
		switch {
		case err == nil:
			return nil
		case lctx.Err() != nil:
			return busy(ctx, lctx.Err())
		case !held:
			if failures++; failures >= 3 {
				return fmt.Errorf("storage lock: %w", err)
			}
		}
		select {
		case <-time.After(randv2.N(lockJitter) + time.Millisecond):
		case <-lctx.Done():
			return busy(ctx, lctx.Err())
		}
	}
}

func (st *Storage) Get(ctx context.Context, key string) ([]byte, Version, error) {
	env, live, err := st.load(ctx, st.keyPath(key))
	if err != nil {
		return nil, nil, err
	}
	if !live {
		return nil, nil, ErrNotFound
	}
	return env.Value, env.Ver, nil
}

func (st *Storage) Add(ctx context.Context, key string, value []byte, ttl time.Duration) (stored bool, err error) {
	path := st.keyPath(key)
	err = st.locked(ctx, path, func() error {
		env, live, err := st.load(ctx, path)
		if err != nil || live {
			return err
		}
		stored = true
		return st.store(ctx, path, env, value, ttl)
	})
	return stored && err == nil, err
}

func (st *Storage) CompareAndSwap(ctx context.Context, key string, ver Version, value []byte, ttl time.Duration) (stored bool, err error) {
	old, ok := ver.(uint64)
	if !ok {
		return false, fmt.Errorf("storage: compare-and-swap: version of type %T is not from this store", ver)
	}
	path := st.keyPath(key)
	err = st.locked(ctx, path, func() error {
		env, live, err := st.load(ctx, path)
		if err != nil || !live || env.Ver != old {
			return err
		}
		stored = true
		return st.store(ctx, path, env, value, ttl)
	})
	return stored && err == nil, err
}

func (st *Storage) DeleteIf(ctx context.Context, key string, value []byte) error {
	path := st.keyPath(key)
	return st.locked(ctx, path, func() error {
		env, _, err := st.load(ctx, path)
		if err != nil || env == nil || string(env.Value) != string(value) {
			return err
		}
		return st.delete(ctx, path)
	})
}

func (st *Storage) Delete(ctx context.Context, key string) error {
	path := st.keyPath(key)
	return st.locked(ctx, path, func() error { return st.delete(ctx, path) })
}

func (st *Storage) delete(ctx context.Context, path string) error {
	if err := st.s.Delete(ctx, path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage delete: %w", err)
	}
	return nil
}

func (st *Storage) Incr(ctx context.Context, key string, ttl time.Duration) (n int64, err error) {
	path := st.keyPath(key)
	err = st.locked(ctx, path, func() error {
		env, live, err := st.load(ctx, path)
		if err != nil {
			return err
		}
		n = 1
		if live {
			if c, perr := strconv.ParseInt(string(env.Value), 10, 64); perr == nil && c > 0 {
				n = c + 1
				// Keep the counter's expiry.
				if env.ExpiresAt != 0 {
					ttl = time.Duration(env.ExpiresAt-st.now().UnixMilli()) * time.Millisecond
					if ttl <= 0 {
						ttl = time.Millisecond
					}
				} else {
					ttl = 0
				}
			}
		}
		return st.store(ctx, path, env, strconv.AppendInt(nil, n, 10), ttl)
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Close waits for a sweep in flight; the storage belongs to Caddy.
func (st *Storage) Close() error {
	st.sweeping.Wait()
	return nil
}

// lister is the part of certmagic.Storage a sweep needs.
type lister interface {
	List(ctx context.Context, prefix string, recursive bool) ([]string, error)
}

// maybeSweep starts a sweep if the storage can List and none ran for
// sweepEvery.
func (st *Storage) maybeSweep() {
	if _, ok := st.s.(lister); !ok {
		return
	}
	now := st.now()
	st.sweepMu.Lock()
	if now.Before(st.nextSweep) {
		st.sweepMu.Unlock()
		return
	}
	st.nextSweep = now.Add(sweepEvery)
	st.sweeping.Add(1)
	st.sweepMu.Unlock()
	go func() {
		defer st.sweeping.Done()
		ctx, cancel := context.WithTimeout(context.Background(), sweepTimeout)
		defer cancel()
		_, _ = st.Sweep(ctx)
	}()
}

// Sweep deletes up to sweepBatch expired files under the prefix, each
// under its lock and checked again there, starting where the last sweep
// stopped, and reports how many it deleted. Files that are not
// envelopes are left alone: they are not ours. A storage that cannot
// List is not swept.
func (st *Storage) Sweep(ctx context.Context) (int, error) {
	l, ok := st.s.(lister)
	if !ok {
		return 0, nil
	}
	dir := path.Dir(st.prefix + "x") // the folder the files are in
	keys, err := l.List(ctx, dir, false)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil
		}
		return 0, fmt.Errorf("storage list: %w", err)
	}
	slices.Sort(keys)
	st.sweepMu.Lock()
	start := st.cursor
	st.sweepMu.Unlock()
	if start >= len(keys) {
		start = 0
	}
	deleted, seen := 0, 0
	for i := start; i < len(keys) && seen < sweepBatch; i++ {
		seen++
		p := keys[i]
		if !strings.HasPrefix(p, st.prefix) || strings.Contains(p[len(st.prefix):], "/") {
			continue
		}
		env, live, err := st.load(ctx, p)
		if err != nil || env == nil || live {
			continue
		}
		gone := false
		err = st.lockedNoSweep(ctx, p, func() error {
			env, live, err := st.load(ctx, p)
			if err != nil || env == nil || live {
				return err
			}
			gone = true
			return st.delete(ctx, p)
		})
		if err == nil && gone {
			deleted++
		}
	}
	st.sweepMu.Lock()
	st.cursor = start + seen
	st.sweepMu.Unlock()
	return deleted, nil
}

// localLocks serialises, per storage path, the callers in this process.
var localLocks = keyedMutex{m: map[string]*keyedEntry{}}

type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	ch   chan struct{} // holds one token while locked
	refs int
}

// lock waits for path's turn or for ctx; the entry is dropped when no
// one holds or waits for it, so the map does not grow with old keys.
func (k *keyedMutex) lock(ctx context.Context, path string) (func(), error) {
	k.mu.Lock()
	e := k.m[path]
	if e == nil {
		e = &keyedEntry{ch: make(chan struct{}, 1)}
		k.m[path] = e
	}
	e.refs++
	k.mu.Unlock()
	release := func() {
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, path)
		}
		k.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

func randomUint64() uint64 { return uint64(randomVersion()) }
