package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
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
// Expiry is on each instance's clock: keep the clocks in sync (NTP).
type Storage struct {
	s      KeyValueStorage
	prefix string
	now    func() time.Time
}

// NewStorage stores every key under prefix, a storage path such as
// "wechat/".
func NewStorage(s KeyValueStorage, prefix string) *Storage {
	return &Storage{s: s, prefix: prefix, now: time.Now}
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
// polling the storage's lock (file_system polls once a second).
func (st *Storage) locked(ctx context.Context, path string, fn func() error) error {
	unlockLocal, err := localLocks.lock(ctx, path)
	if err != nil {
		return err
	}
	defer unlockLocal()
	if err := st.s.Lock(ctx, path); err != nil {
		return fmt.Errorf("storage lock: %w", err)
	}
	ferr := fn()
	// Unlock even when ctx has run out, or the next caller waits for the
	// lock to go stale.
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := st.s.Unlock(uctx, path); err != nil && ferr == nil {
		ferr = fmt.Errorf("storage unlock: %w", err)
	}
	return ferr
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

// Close does nothing: the storage belongs to Caddy.
func (st *Storage) Close() error { return nil }

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
