package push

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// Marks is what de-duplication needs from a store: three of
// credential.Backend's primitives. Every credential.Backend (memcache,
// Redis, SQL, Caddy storage) is one, for a cluster; MemMarks is one for a
// single process.
type Marks interface {
	Get(ctx context.Context, key string) ([]byte, credential.Version, error)
	Add(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
	CompareAndSwap(ctx context.Context, key string, ver credential.Version, value []byte, ttl time.Duration) (bool, error)
}

// A mark's states.
const (
	statePending = 'p' // a delivery is with the app
	stateDone    = 'd' // the reply is stored
	stateSig     = 's' // plain mode: a signed query is bound to one message
)

// record is a mark's content, sealed before it reaches a store.
type record struct {
	state    byte
	first    int64 // Unix ms of the first delivery
	deadline int64 // pending: Unix ms after which another delivery may take the message over
	n        uint8 // deliveries so far
	owner    [12]byte
	ctype    byte // reply content type (ctype*)
	body     []byte
}

const recordHeader = 1 + 8 + 8 + 1 + 12 + 1

func (r *record) encode() []byte {
	b := make([]byte, recordHeader, recordHeader+len(r.body))
	b[0] = r.state
	binary.BigEndian.PutUint64(b[1:], uint64(r.first))
	binary.BigEndian.PutUint64(b[9:], uint64(r.deadline))
	b[17] = r.n
	copy(b[18:30], r.owner[:])
	b[30] = r.ctype
	return append(b, r.body...)
}

func decodeRecord(b []byte) (*record, bool) {
	if len(b) < recordHeader {
		return nil, false
	}
	r := &record{
		state:    b[0],
		first:    int64(binary.BigEndian.Uint64(b[1:])),
		deadline: int64(binary.BigEndian.Uint64(b[9:])),
		n:        b[17],
		ctype:    b[30],
		body:     b[recordHeader:],
	}
	copy(r.owner[:], b[18:30])
	switch r.state {
	case statePending, stateDone, stateSig:
		return r, true
	}
	return nil, false
}

// outcome is what begin decided for one delivery.
type outcome int

const (
	runApp   outcome = iota // first delivery (or a takeover): ask the app
	useStore                // the reply is stored: answer it
	waitApp                 // another delivery is with the app: wait for its reply
	isReplay                // outside the retry pattern: refuse
)

var (
	errReplay     = errors.New("replay")
	errContention = errors.New("the mark kept changing")
	errGone       = errors.New("the mark vanished while waiting")
)

// dedupe is the state machine of "each message once", written once over
// Marks. Values are sealed under the account's key and keys are HMAC
// names, so a store reader learns nothing and a store writer can plant
// nothing: a value that does not open is treated as absent (and written
// over), so it can neither block a message nor supply its reply.
type dedupe struct {
	marks         Marks
	seal          *credential.Sealer
	prefix        string
	opTimeout     time.Duration
	retrySpan     time.Duration // deliveries later than this after the first are replays
	maxDeliveries uint8         // more deliveries than this are replays
	claimFor      time.Duration // how long a claim holds the message unless renewed
	ttl           time.Duration // a mark's life
	poll          time.Duration // how often a waiting delivery looks again
}

func (d *dedupe) key(kind, v string) string { return d.prefix + "push:" + d.seal.Name(kind, v) }

func (d *dedupe) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.opTimeout)
}

// get reads a mark: nil with present=false when absent, nil with
// present=true when it holds something this account did not seal.
func (d *dedupe) get(ctx context.Context, key string) (rec *record, ver credential.Version, present bool, err error) {
	c, cancel := d.opCtx(ctx)
	v, ver, err := d.marks.Get(c, key)
	cancel()
	if errors.Is(err, credential.ErrNotFound) {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, err
	}
	p, oerr := d.seal.Open(key, v)
	if oerr != nil {
		return nil, ver, true, nil
	}
	r, ok := decodeRecord(p)
	if !ok {
		return nil, ver, true, nil
	}
	return r, ver, true, nil
}

// put writes rec with Add (absent) or CompareAndSwap (over ver).
func (d *dedupe) put(ctx context.Context, key string, present bool, ver credential.Version, rec *record, ttl time.Duration) (bool, error) {
	if ttl < time.Second {
		ttl = time.Second
	}
	v := d.seal.Seal(key, rec.encode())
	c, cancel := d.opCtx(ctx)
	defer cancel()
	if !present {
		return d.marks.Add(c, key, v, ttl)
	}
	return d.marks.CompareAndSwap(c, key, ver, v, ttl)
}

// left is what remains of a mark's life that began at first.
func (d *dedupe) left(first int64, now time.Time) time.Duration {
	return time.UnixMilli(first).Add(d.ttl).Sub(now)
}

// begin records one delivery of the message named key.
func (d *dedupe) begin(ctx context.Context, key string, owner [12]byte, now time.Time) (outcome, *record, error) {
	ms := now.UnixMilli()
	for range 8 {
		rec, ver, present, err := d.get(ctx, key)
		if err != nil {
			return 0, nil, err
		}
		if rec == nil || rec.state == stateSig {
			nr := &record{state: statePending, first: ms, deadline: ms + d.claimFor.Milliseconds(), n: 1, owner: owner}
			ok, err := d.put(ctx, key, present, ver, nr, d.ttl)
			if err != nil {
				return 0, nil, err
			}
			if ok {
				return runApp, nr, nil
			}
			continue
		}
		if ms-rec.first > d.retrySpan.Milliseconds() || rec.n >= d.maxDeliveries {
			return isReplay, rec, nil
		}
		rec.n++
		takeover := rec.state == statePending && ms > rec.deadline
		if takeover {
			rec.owner, rec.deadline = owner, ms+d.claimFor.Milliseconds()
		}
		ok, err := d.put(ctx, key, true, ver, rec, d.left(rec.first, now))
		if err != nil {
			return 0, nil, err
		}
		if !ok {
			continue
		}
		switch {
		case takeover:
			return runApp, rec, nil
		case rec.state == stateDone:
			return useStore, rec, nil
		}
		return waitApp, rec, nil
	}
	return 0, nil, errContention
}

// finish stores the reply of the delivery owner, if it still holds the
// message (a slow owner whose message was taken over stores nothing).
func (d *dedupe) finish(ctx context.Context, key string, owner [12]byte, ctype byte, body []byte, now time.Time) error {
	for range 8 {
		rec, ver, _, err := d.get(ctx, key)
		if err != nil {
			return err
		}
		if rec == nil || rec.state != statePending || rec.owner != owner {
			return nil
		}
		rec.state, rec.ctype, rec.body = stateDone, ctype, body
		ok, err := d.put(ctx, key, true, ver, rec, d.left(rec.first, now))
		if err != nil || ok {
			return err
		}
	}
	return errContention
}

// renew extends owner's claim by claimFor from now; held is false when
// the claim is no longer owner's (taken over, done, or gone).
func (d *dedupe) renew(ctx context.Context, key string, owner [12]byte, now time.Time) (held bool, err error) {
	for range 8 {
		rec, ver, _, err := d.get(ctx, key)
		if err != nil {
			return true, err
		}
		if rec == nil || rec.state != statePending || rec.owner != owner {
			return false, nil
		}
		rec.deadline = now.UnixMilli() + d.claimFor.Milliseconds()
		ok, err := d.put(ctx, key, true, ver, rec, d.left(rec.first, now))
		if err != nil || ok {
			return true, err
		}
	}
	return true, errContention
}

// wait polls until the reply is stored, the owner's claim lapses (then
// this delivery takes over: runApp), the mark vanishes, or ctx ends. A
// failed poll is tried again: the reply may be there on the next.
func (d *dedupe) wait(ctx context.Context, key string, owner [12]byte, now func() time.Time) (outcome, *record, error) {
	t := time.NewTicker(d.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		case <-t.C:
		}
		rec, ver, _, err := d.get(ctx, key)
		if err != nil {
			continue // a store hiccup: look again, until ctx ends
		}
		switch {
		case rec == nil || rec.state == stateSig:
			return 0, nil, errGone
		case rec.state == stateDone:
			return useStore, rec, nil
		}
		n := now()
		if n.UnixMilli() > rec.deadline {
			rec.owner, rec.deadline = owner, n.UnixMilli()+d.claimFor.Milliseconds()
			if ok, err := d.put(ctx, key, true, ver, rec, d.left(rec.first, n)); err == nil && ok {
				return runApp, rec, nil
			}
		}
	}
}

// bindSig ties a signed query (timestamp, nonce, signature) to the one
// message it came with. In plain mode the signature does not cover the
// body, so without this a captured query could carry any message for as
// long as its timestamp is fresh.
func (d *dedupe) bindSig(ctx context.Context, sigKey, msgKey string, now time.Time) error {
	key := d.key("push-sig", sigKey)
	want := []byte(msgKey)
	for range 8 {
		rec, ver, present, err := d.get(ctx, key)
		if err != nil {
			return err
		}
		if rec != nil && rec.state == stateSig {
			if !bytes.Equal(rec.body, want) {
				return errReplay
			}
			return nil
		}
		ok, err := d.put(ctx, key, present, ver, &record{state: stateSig, first: now.UnixMilli(), body: want}, d.ttl)
		if err != nil || ok {
			return err
		}
	}
	return errContention
}
