package credential

import (
	"context"
	"errors"
	"time"
)

// Backend is what a shared store implements: a handful of atomic
// primitives over opaque byte values. The cluster protocol (read, lease,
// fetch, newer-wins write, wait for the lease holder, daily counters) is
// written once in this package over these primitives, so a backend adds
// storage and nothing else: no policy, no clocks, no retries.
//
// Values reach a backend already sealed (authenticated and encrypted by
// the engine), so a backend never sees a token or a secret. Keys are
// printable ASCII without spaces, at most 200 bytes.
//
// Every method honours ctx's deadline where the client library allows;
// the engine bounds each call with a short timeout and wraps the backend
// in a breaker, so a dead or black-holed store costs one short timeout.
type Backend interface {
	// Get returns the value under key and an opaque version for
	// CompareAndSwap. A missing or expired key is ErrNotFound.
	Get(ctx context.Context, key string) (value []byte, ver Version, err error)

	// Add stores value under key only if the key is absent or expired,
	// and reports whether it stored. ttl 0 means no expiry.
	Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)

	// CompareAndSwap replaces the value under key only if it is still at
	// version ver (as returned by Get), and reports whether it stored:
	// false when another write came in between or the key is gone.
	// ttl 0 means no expiry.
	CompareAndSwap(ctx context.Context, key string, ver Version, value []byte, ttl time.Duration) (bool, error)

	// DeleteIf deletes key only if it still holds value, so that a lease
	// is released only by its holder. A missing key is not an error.
	DeleteIf(ctx context.Context, key string, value []byte) error

	// Delete deletes key unconditionally. A missing key is not an error.
	Delete(ctx context.Context, key string) error

	// Incr adds one to the counter under key, creating it at 1 with ttl
	// when absent or not a number, and returns the new count. Get on a
	// counter key returns its count in decimal ASCII. The engine's daily
	// counters do not use it: a plain count is anyone's to plant, so they
	// are sealed slots written with Add and CompareAndSwap.
	Incr(ctx context.Context, key string, ttl time.Duration) (int64, error)

	// Close releases the backend's connections.
	Close() error
}

// Version is a backend's own token for CompareAndSwap: a memcache CAS id,
// a row version, a copy of the value. Only the backend that produced it
// interprets it.
type Version any

// ErrNotFound is a Backend's answer for a missing or expired key. It is
// an answer, not a failure: it never opens the breaker.
var ErrNotFound = errors.New("credential: not found")

// ErrBusy is a Backend's answer for a write that found the key locked by
// a peer for as long as it may wait (Caddy storage's lock): contention,
// not a failure. It never opens the breaker; the caller goes on as it
// would without the store for this one call.
var ErrBusy = errors.New("credential: the key is locked by a peer")
