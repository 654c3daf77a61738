package credential

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strconv"
	"time"
)

// Everything the engine reads from a store is sealed, not only tokens:
// leases, one-time marks and daily counters too. A value the account's
// gateways did not write (planted, corrupt, foreign, or an honest one
// copied back after its time) is worth no more than an absent one, so the
// worst a store writer can do is make the gateway behave as if it had no
// store.
//
//   - A claim (a lease, a Remember mark) is a sealed expiry and a random
//     id. It holds only until the expiry it carries: a claim with no
//     store TTL, or an old one put back, has expired by its own content
//     and is taken over with CompareAndSwap. A waiter also stops honouring
//     any claim once it has waited as long as its own honest lease lives
//     (the bound), so a peer's skewed clock cannot stretch it either.
//   - A daily counter is split in counterSlots sealed counts; each
//     instance adds to its own slot with CompareAndSwap and the count is
//     the sum of the slots that open. An unsealable slot counts 0, and
//     the engine never reads more than counterSlots keys for a count.

// claimSkew is how far a peer's clock may run behind ours before its
// claim looks over early; a claim put back after its time is ignored
// once it is this much past its expiry.
const claimSkew = 5 * time.Second

// counterSlots bounds the keys read for one count. Instances pick a slot
// at random; two on one slot only share it through CompareAndSwap.
const counterSlots = 8

// errStuck: the store kept refusing to let a planted value be replaced
// (e.g. a row that CompareAndSwap cannot match). The caller goes on as
// without a store.
var errStuck = errors.New("credential store: a value that is not ours could not be replaced")

// sealClaim seals a claim under key that holds until until.
func (s *Shared) sealClaim(key string, until time.Time) []byte {
	var p [20]byte
	binary.BigEndian.PutUint64(p[:8], uint64(until.UnixNano()))
	_, _ = rand.Read(p[8:])
	return s.seal.Seal(key, p[:])
}

// openClaim returns the expiry a claim carries; ok is false for anything
// this account did not seal under key.
func (s *Shared) openClaim(key string, v []byte) (until time.Time, ok bool) {
	p, err := s.seal.Open(key, v)
	if err != nil || len(p) != 20 {
		return time.Time{}, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(p[:8]))), true
}

// liveClaim reports until when a stored value holds key: zero if it is
// not a live claim of this account, capped at bound when bound is set.
func (s *Shared) liveClaim(key string, v []byte, bound time.Time) time.Time {
	until, ok := s.openClaim(key, v)
	if !ok {
		return time.Time{}
	}
	until = until.Add(claimSkew)
	if !bound.IsZero() && until.After(bound) {
		until = bound
	}
	if !s.opt.Now().Before(until) {
		return time.Time{}
	}
	return until
}

// claim takes key for ttl unless it holds a live claim of this account
// (honoured until bound at the latest, when bound is set). It returns
// the sealed claim it wrote or tried to write (for DeleteIf), whether it
// holds the key now, and otherwise until when the holder's claim lasts.
func (s *Shared) claim(ctx context.Context, key string, ttl time.Duration, bound time.Time) (mine []byte, won bool, until time.Time, err error) {
	mine = s.sealClaim(key, s.opt.Now().Add(ttl))
	for range saveAttempts {
		err = s.do(ctx, "add", func(ctx context.Context) (err error) {
			won, err = s.b.Add(ctx, key, mine, ttl)
			return err
		})
		if err != nil || won {
			return mine, won, time.Time{}, err
		}
		var v []byte
		var ver Version
		err = s.do(ctx, "get", func(ctx context.Context) (err error) {
			v, ver, err = s.b.Get(ctx, key)
			return err
		})
		if errors.Is(err, ErrNotFound) {
			continue // gone in between: Add again
		}
		if err != nil {
			return mine, false, time.Time{}, err
		}
		if until = s.liveClaim(key, v, bound); !until.IsZero() {
			return mine, false, until, nil
		}
		// Planted, foreign, or expired by its own content: not a claim.
		err = s.do(ctx, "cas", func(ctx context.Context) (err error) {
			won, err = s.b.CompareAndSwap(ctx, key, ver, mine, ttl)
			return err
		})
		if err != nil || won {
			return mine, won, time.Time{}, err
		}
	}
	return mine, false, time.Time{}, errStuck
}

// counterKey is the key of this instance's slot of a counter.
func (s *Shared) counterKey(key string, slot int) string {
	return key + ":" + strconv.Itoa(slot)
}

// openCount returns a sealed count, 0 for anything unsealable.
func (s *Shared) openCount(key string, v []byte) int64 {
	p, err := s.seal.Open(key, v)
	if err != nil || len(p) != 8 {
		return 0
	}
	n := int64(binary.BigEndian.Uint64(p))
	return max(n, 0)
}

func (s *Shared) sealCount(key string, n int64) []byte {
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], uint64(n))
	return s.seal.Seal(key, p[:])
}

// incr adds one to this instance's slot of a daily counter and returns
// the cluster's count: the sum of the slots that open. On an error the
// caller counts locally.
func (s *Shared) incr(ctx context.Context, key string) (int64, error) {
	own := s.counterKey(key, s.slot)
	var mine int64
	done := false
	for range saveAttempts {
		var v []byte
		var ver Version
		err := s.do(ctx, "get", func(ctx context.Context) (err error) {
			v, ver, err = s.b.Get(ctx, own)
			return err
		})
		present := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return 0, err
		}
		mine = 1
		if present {
			mine = s.openCount(own, v) + 1
		}
		sealed := s.sealCount(own, mine)
		var stored bool
		if present {
			err = s.do(ctx, "cas", func(ctx context.Context) (err error) {
				stored, err = s.b.CompareAndSwap(ctx, own, ver, sealed, counterTTL)
				return err
			})
		} else {
			err = s.do(ctx, "add", func(ctx context.Context) (err error) {
				stored, err = s.b.Add(ctx, own, sealed, counterTTL)
				return err
			})
		}
		if err != nil {
			return 0, err
		}
		if stored {
			done = true
			break
		}
	}
	if !done {
		return 0, errStuck
	}
	n, err := s.count(ctx, key, s.slot)
	return n + mine, err
}

// count sums the slots of a counter, except skip (-1: none).
func (s *Shared) count(ctx context.Context, key string, skip int) (int64, error) {
	var n int64
	for i := range counterSlots {
		if i == skip {
			continue
		}
		k := s.counterKey(key, i)
		var v []byte
		err := s.do(ctx, "get", func(ctx context.Context) (err error) {
			v, _, err = s.b.Get(ctx, k)
			return err
		})
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		n += s.openCount(k, v)
	}
	return n, nil
}
