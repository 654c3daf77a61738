// Package memstore is an in-memory credential.Backend for unit tests and
// for conformance runs: it can be paused (calls hang until their deadline)
// and killed (calls fail) like a real server.
package memstore

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// Store is the shared data; each Open gives a client of it.
type Store struct {
	Now func() time.Time

	mu     sync.Mutex
	data   map[string]entry
	seq    uint64
	paused chan struct{} // non-nil while paused; closed on resume
	down   bool
	ops    int64
}

type entry struct {
	v       []byte
	ver     uint64
	expires time.Time
}

// New returns an empty store on the real clock.
func New() *Store { return &Store{Now: time.Now, data: map[string]entry{}} }

// ErrDown is what a killed store answers.
var ErrDown = errors.New("memstore: connection refused")

// Pause makes calls hang until their deadline or Resume.
func (s *Store) Pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused == nil {
		s.paused = make(chan struct{})
	}
}

// Resume undoes Pause.
func (s *Store) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused != nil {
		close(s.paused)
		s.paused = nil
	}
}

// Kill makes calls fail; data is kept (as by a durable server).
func (s *Store) Kill() { s.mu.Lock(); s.down = true; s.mu.Unlock() }

// Restart undoes Kill.
func (s *Store) Restart() { s.mu.Lock(); s.down = false; s.mu.Unlock() }

// Ops counts calls that reached the store.
func (s *Store) Ops() int64 { s.mu.Lock(); defer s.mu.Unlock(); return s.ops }

// Open returns a client.
func (s *Store) Open() credential.Backend { return client{s} }

// enter waits out a pause and returns with s.mu held, or an error.
func (s *Store) enter(ctx context.Context) error {
	for {
		s.mu.Lock()
		p := s.paused
		if p == nil {
			break
		}
		s.mu.Unlock()
		select {
		case <-p:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.down {
		s.mu.Unlock()
		return ErrDown
	}
	s.ops++
	return nil
}

func (s *Store) live(key string) (entry, bool) {
	e, ok := s.data[key]
	if ok && !e.expires.IsZero() && !s.Now().Before(e.expires) {
		delete(s.data, key)
		return entry{}, false
	}
	return e, ok
}

func (s *Store) put(key string, v []byte, ttl time.Duration) {
	s.seq++
	e := entry{v: append([]byte(nil), v...), ver: s.seq}
	if ttl > 0 {
		e.expires = s.Now().Add(ttl)
	}
	s.data[key] = e
}

type client struct{ s *Store }

func (c client) Get(ctx context.Context, key string) ([]byte, credential.Version, error) {
	if err := c.s.enter(ctx); err != nil {
		return nil, nil, err
	}
	defer c.s.mu.Unlock()
	e, ok := c.s.live(key)
	if !ok {
		return nil, nil, credential.ErrNotFound
	}
	return append([]byte(nil), e.v...), e.ver, nil
}

func (c client) Add(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	if err := c.s.enter(ctx); err != nil {
		return false, err
	}
	defer c.s.mu.Unlock()
	if _, ok := c.s.live(key); ok {
		return false, nil
	}
	c.s.put(key, v, ttl)
	return true, nil
}

func (c client) CompareAndSwap(ctx context.Context, key string, ver credential.Version, v []byte, ttl time.Duration) (bool, error) {
	if err := c.s.enter(ctx); err != nil {
		return false, err
	}
	defer c.s.mu.Unlock()
	e, ok := c.s.live(key)
	if n, _ := ver.(uint64); !ok || e.ver != n {
		return false, nil
	}
	c.s.put(key, v, ttl)
	return true, nil
}

func (c client) DeleteIf(ctx context.Context, key string, v []byte) error {
	if err := c.s.enter(ctx); err != nil {
		return err
	}
	defer c.s.mu.Unlock()
	if e, ok := c.s.live(key); ok && string(e.v) == string(v) {
		delete(c.s.data, key)
	}
	return nil
}

func (c client) Delete(ctx context.Context, key string) error {
	if err := c.s.enter(ctx); err != nil {
		return err
	}
	defer c.s.mu.Unlock()
	delete(c.s.data, key)
	return nil
}

func (c client) Incr(ctx context.Context, key string, ttl time.Duration) (int64, error) {
	if err := c.s.enter(ctx); err != nil {
		return 0, err
	}
	defer c.s.mu.Unlock()
	e, ok := c.s.live(key)
	n, err := strconv.ParseInt(string(e.v), 10, 64)
	if !ok || err != nil {
		c.s.put(key, []byte("1"), ttl)
		return 1, nil
	}
	n++
	e.v = []byte(strconv.FormatInt(n, 10))
	c.s.seq++
	e.ver = c.s.seq
	c.s.data[key] = e
	return n, nil
}

func (client) Close() error { return nil }
