// Package memcachestore is the memcache credential.Backend, on
// gomemcache: Add, CompareAndSwap with the CAS id, Increment (with Add to
// create a counter).
package memcachestore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/caddy-wechat/wechat/internal/credential"
)

// Backend is a memcache client. gomemcache takes no context, so Timeout
// (set to the store's op timeout) bounds each call on a black-holed
// server; a context already done is honoured before the call.
type Backend struct {
	c *memcache.Client
}

// New connects to servers; timeout bounds each network call.
func New(servers []string, timeout time.Duration) (*Backend, error) {
	if len(servers) == 0 {
		return nil, errors.New("memcache: no servers configured")
	}
	ss := new(memcache.ServerList)
	if err := ss.SetServers(servers...); err != nil {
		return nil, fmt.Errorf("memcache servers %v: %v", servers, err)
	}
	c := memcache.NewFromSelector(ss)
	c.Timeout = timeout
	if c.Timeout <= 0 {
		c.Timeout = 100 * time.Millisecond
	}
	c.MaxIdleConns = 64
	return &Backend{c: c}, nil
}

var _ credential.Backend = (*Backend)(nil)

// key maps an engine key to a legal memcache key (at most 250 bytes, no
// spaces or control characters): as is if legal, else a hash.
func key(k string) string {
	ok := len(k) <= 250
	for i := 0; ok && i < len(k); i++ {
		if k[i] <= ' ' || k[i] == 0x7f {
			ok = false
		}
	}
	if ok {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return "wechat:h:" + hex.EncodeToString(sum[:])
}

func seconds(ttl time.Duration) int32 {
	if ttl <= 0 {
		return 0
	}
	return int32((ttl + time.Second - 1) / time.Second)
}

// fail maps a client error to one that never quotes a server answer,
// which might hold a stored value, and drops idle connections, which are
// dead after an outage.
func (b *Backend) fail(err error) error {
	if err == nil {
		return nil
	}
	_ = b.c.Close()
	var oe *net.OpError
	var cte *memcache.ConnectTimeoutError
	switch {
	case errors.As(err, &oe):
		return errors.New(oe.Error())
	case errors.As(err, &cte):
		return errors.New(cte.Error())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("memcache: connection closed")
	case errors.Is(err, memcache.ErrNoServers), errors.Is(err, memcache.ErrServerError), errors.Is(err, memcache.ErrMalformedKey):
		return err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("memcache: timeout")
	}
	return errors.New("memcache: unexpected answer")
}

func (b *Backend) Get(ctx context.Context, k string) ([]byte, credential.Version, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	it, err := b.c.Get(key(k))
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil, nil, credential.ErrNotFound
	}
	if err != nil {
		return nil, nil, b.fail(err)
	}
	return it.Value, it.CasID, nil
}

func (b *Backend) Add(ctx context.Context, k string, v []byte, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	err := b.c.Add(&memcache.Item{Key: key(k), Value: v, Expiration: seconds(ttl)})
	if errors.Is(err, memcache.ErrNotStored) {
		return false, nil
	}
	return err == nil, b.fail(err)
}

func (b *Backend) CompareAndSwap(ctx context.Context, k string, ver credential.Version, v []byte, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	id, ok := ver.(uint64)
	if !ok {
		return false, nil
	}
	err := b.c.CompareAndSwap(&memcache.Item{Key: key(k), Value: v, Expiration: seconds(ttl), CasID: id})
	if errors.Is(err, memcache.ErrCASConflict) || errors.Is(err, memcache.ErrNotStored) || errors.Is(err, memcache.ErrCacheMiss) {
		return false, nil
	}
	return err == nil, b.fail(err)
}

// DeleteIf deletes k only if it holds v, atomically: memcache has no
// conditional delete, so it reads the item with its CAS id (gets) and
// swaps it, under that id, for an empty item that expires at once (a
// negative exptime). A write between the read and the swap changes the
// CAS id and the swap fails, so a lease taken over, or a mark made
// again, in between is never deleted.
func (b *Backend) DeleteIf(ctx context.Context, k string, v []byte) error {
	return b.deleteIf(ctx, k, v, nil)
}

// deleteIf is DeleteIf with a hook between the read and the swap (tests).
func (b *Backend) deleteIf(ctx context.Context, k string, v []byte, between func()) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	it, err := b.c.Get(key(k))
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil
	}
	if err != nil {
		return b.fail(err)
	}
	if !bytes.Equal(it.Value, v) {
		return nil
	}
	if between != nil {
		between()
	}
	err = b.c.CompareAndSwap(&memcache.Item{Key: it.Key, Value: []byte{}, Expiration: -1, CasID: it.CasID})
	if errors.Is(err, memcache.ErrCASConflict) || errors.Is(err, memcache.ErrNotStored) || errors.Is(err, memcache.ErrCacheMiss) {
		return nil // changed or gone since the read: not ours to delete
	}
	return b.fail(err)
}

func (b *Backend) Delete(ctx context.Context, k string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := b.c.Delete(key(k))
	if errors.Is(err, memcache.ErrCacheMiss) {
		return nil
	}
	return b.fail(err)
}

func (b *Backend) Incr(ctx context.Context, k string, ttl time.Duration) (int64, error) {
	k = key(k)
	for range 3 {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n, err := b.c.Increment(k, 1)
		switch {
		case err == nil:
			return int64(n), nil
		case errors.Is(err, memcache.ErrCacheMiss):
			err = b.c.Add(&memcache.Item{Key: k, Value: []byte("1"), Expiration: seconds(ttl)})
			if err == nil {
				return 1, nil
			}
			if !errors.Is(err, memcache.ErrNotStored) {
				return 0, b.fail(err)
			}
		case strings.HasPrefix(err.Error(), "memcache: client error"):
			// Not a number: start the count again.
			if err := b.c.Set(&memcache.Item{Key: k, Value: []byte("1"), Expiration: seconds(ttl)}); err != nil {
				return 0, b.fail(err)
			}
			return 1, nil
		default:
			return 0, b.fail(err)
		}
	}
	return 0, errors.New("memcache: counter kept changing")
}

func (b *Backend) Close() error { return b.c.Close() }
