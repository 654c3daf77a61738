package credential_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

func TestRedisPrimitives(t *testing.T)    { testPrimitives(t, redisHarness(t)) }
func TestMariaDBPrimitives(t *testing.T)  { testPrimitives(t, mariadbHarness(t)) }
func TestPostgresPrimitives(t *testing.T) { testPrimitives(t, postgresHarness(t)) }
func TestStoragePrimitives(t *testing.T) {
	overlapIfFast(t)
	testPrimitives(t, storageHarness(t))
}

func opCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	t.Cleanup(cancel)
	return ctx
}

func mustGet(t *testing.T, b credential.Backend, key string) ([]byte, credential.Version) {
	t.Helper()
	v, ver, err := b.Get(opCtx(t), key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	return v, ver
}

func wantGet(t *testing.T, b credential.Backend, key, want string) credential.Version {
	t.Helper()
	v, ver := mustGet(t, b, key)
	if string(v) != want {
		t.Fatalf("Get(%s) = %q, want %q", key, v, want)
	}
	return ver
}

func wantNotFound(t *testing.T, b credential.Backend, key string) {
	t.Helper()
	if v, _, err := b.Get(opCtx(t), key); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("Get(%s) = %q, %v; want ErrNotFound", key, v, err)
	}
}

func add(t *testing.T, b credential.Backend, key, value string, ttl time.Duration) bool {
	t.Helper()
	ok, err := b.Add(opCtx(t), key, []byte(value), ttl)
	if err != nil {
		t.Fatalf("Add(%s): %v", key, err)
	}
	return ok
}

// waitExpired polls until key is gone: the test waits for the store's
// own expiry, however long the machine takes, instead of sleeping a
// guessed time.
func waitExpired(t *testing.T, b credential.Backend, key string) {
	t.Helper()
	for range 500 {
		_, _, err := b.Get(opCtx(t), key)
		if errors.Is(err, credential.ErrNotFound) {
			return
		}
		if err != nil {
			t.Fatalf("Get(%s): %v", key, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s did not expire", key)
}

const shortTTL = 100 * time.Millisecond

// testPrimitives checks each Backend primitive against h's real store,
// with two clients (two gateway instances).
func testPrimitives(t *testing.T, h harness) {
	a, b := h.Open(t), h.Open(t)

	t.Run("AddOnlyIfAbsent", func(t *testing.T) {
		if !add(t, a, "add", "first", time.Hour) {
			t.Fatal("Add on a missing key did not store")
		}
		if add(t, b, "add", "second", time.Hour) {
			t.Fatal("Add on a live key stored")
		}
		wantGet(t, b, "add", "first")
	})

	t.Run("AddTakesOverExpired", func(t *testing.T) {
		if !add(t, a, "lease", "holder-a", shortTTL) {
			t.Fatal("first Add did not store")
		}
		waitExpired(t, b, "lease")
		if !add(t, b, "lease", "holder-b", time.Hour) {
			t.Fatal("Add did not take over an expired key")
		}
		wantGet(t, a, "lease", "holder-b")
	})

	t.Run("CompareAndSwap", func(t *testing.T) {
		add(t, a, "cas", "v1", time.Hour)
		verA := wantGet(t, a, "cas", "v1")
		verB := wantGet(t, b, "cas", "v1")
		ok, err := b.CompareAndSwap(opCtx(t), "cas", verB, []byte("v2"), time.Hour)
		if err != nil || !ok {
			t.Fatalf("CompareAndSwap at the current version = %v, %v; want true", ok, err)
		}
		ok, err = a.CompareAndSwap(opCtx(t), "cas", verA, []byte("v3"), time.Hour)
		if err != nil || ok {
			t.Fatalf("CompareAndSwap after another write = %v, %v; want false", ok, err)
		}
		wantGet(t, a, "cas", "v2")

		// A key deleted and added again is a new key: old versions fail.
		verA = wantGet(t, a, "cas", "v2")
		if err := b.Delete(opCtx(t), "cas"); err != nil {
			t.Fatal(err)
		}
		if ok, err := a.CompareAndSwap(opCtx(t), "cas", verA, []byte("v4"), time.Hour); err != nil || ok {
			t.Fatalf("CompareAndSwap on a deleted key = %v, %v; want false", ok, err)
		}
		add(t, b, "cas", "v2", time.Hour)
		if ok, err := a.CompareAndSwap(opCtx(t), "cas", verA, []byte("v5"), time.Hour); err != nil {
			t.Fatal(err)
		} else if ok {
			// Only a store whose Version is the value may accept it:
			// the value is the same, so nothing is lost.
			wantGet(t, a, "cas", "v5")
		}

		// An expired key has no version to match.
		add(t, a, "cas-exp", "v1", shortTTL)
		ver := wantGet(t, a, "cas-exp", "v1")
		waitExpired(t, a, "cas-exp")
		if ok, err := a.CompareAndSwap(opCtx(t), "cas-exp", ver, []byte("v2"), time.Hour); err != nil || ok {
			t.Fatalf("CompareAndSwap on an expired key = %v, %v; want false", ok, err)
		}
	})

	t.Run("DeleteIfOwnValueOnly", func(t *testing.T) {
		add(t, a, "owned", "holder-a", time.Hour)
		if err := b.DeleteIf(opCtx(t), "owned", []byte("holder-b")); err != nil {
			t.Fatal(err)
		}
		wantGet(t, a, "owned", "holder-a")
		if err := a.DeleteIf(opCtx(t), "owned", []byte("holder-a")); err != nil {
			t.Fatal(err)
		}
		wantNotFound(t, b, "owned")
		if err := a.DeleteIf(opCtx(t), "owned", []byte("holder-a")); err != nil {
			t.Fatalf("DeleteIf on a missing key: %v", err)
		}
		if err := a.Delete(opCtx(t), "never-there"); err != nil {
			t.Fatalf("Delete on a missing key: %v", err)
		}
	})

	t.Run("IncrConcurrent", func(t *testing.T) {
		const per = 100
		var mu sync.Mutex
		var got []int
		var wg sync.WaitGroup
		for _, c := range []credential.Backend{a, b} {
			for range per {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					n, err := c.Incr(ctx, "count", time.Hour)
					if err != nil {
						t.Errorf("Incr: %v", err)
						return
					}
					mu.Lock()
					got = append(got, int(n))
					mu.Unlock()
				})
			}
		}
		wg.Wait()
		sort.Ints(got)
		for i, n := range got {
			if n != i+1 {
				t.Fatalf("Incr results are not 1..%d: position %d is %d", 2*per, i, n)
			}
		}
		wantGet(t, a, "count", strconv.Itoa(2*per))
	})

	t.Run("IncrCreatesWithTTL", func(t *testing.T) {
		for want := int64(1); want <= 2; want++ {
			n, err := a.Incr(opCtx(t), "daily", shortTTL)
			if err != nil || n != want {
				t.Fatalf("Incr = %d, %v; want %d", n, err, want)
			}
		}
		waitExpired(t, b, "daily")
		if n, err := b.Incr(opCtx(t), "daily", time.Hour); err != nil || n != 1 {
			t.Fatalf("Incr after expiry = %d, %v; want 1", n, err)
		}
		add(t, a, "not-a-number", "sealed-bytes", time.Hour)
		if n, err := a.Incr(opCtx(t), "not-a-number", time.Hour); err != nil || n != 1 {
			t.Fatalf("Incr on a value = %d, %v; want 1", n, err)
		}
	})

	t.Run("ExpiryAndTTLZero", func(t *testing.T) {
		add(t, a, "forever", "v", 0)
		add(t, a, "brief", "v", shortTTL)
		waitExpired(t, b, "brief")
		wantNotFound(t, a, "brief")
		wantGet(t, b, "forever", "v") // outlived a key that expired
		ver := wantGet(t, a, "forever", "v")
		if ok, err := a.CompareAndSwap(opCtx(t), "forever", ver, []byte("w"), 0); err != nil || !ok {
			t.Fatalf("CompareAndSwap with ttl 0 = %v, %v", ok, err)
		}
		add(t, a, "brief2", "v", shortTTL)
		waitExpired(t, a, "brief2")
		wantGet(t, b, "forever", "w")
	})

	t.Run("BinaryValues", func(t *testing.T) {
		v := make([]byte, 256)
		for i := range v {
			v[i] = byte(i)
		}
		if ok, err := a.Add(opCtx(t), "bin", v, time.Hour); err != nil || !ok {
			t.Fatalf("Add = %v, %v", ok, err)
		}
		got, _ := mustGet(t, b, "bin")
		if string(got) != string(v) {
			t.Fatalf("binary value changed in the store: % x", got)
		}
		if err := b.DeleteIf(opCtx(t), "bin", v); err != nil {
			t.Fatal(err)
		}
		wantNotFound(t, a, "bin")
	})

	if h.Pause != nil {
		t.Run("PausedTimesOut", func(t *testing.T) { testPaused(t, h, a) })
	}
	if h.Kill != nil {
		t.Run("KillErrorsRestartRecovers", func(t *testing.T) { testKill(t, h, a) })
	}
}

// testPaused: a black-holed store gives an error once the call's
// deadline has passed, and works again after Resume.
func testPaused(t *testing.T, h harness, b credential.Backend) {
	add(t, b, "paused", "v", time.Hour)
	h.Pause(t)
	resumed := false
	defer func() {
		if !resumed {
			h.Resume(t)
		}
	}()
	for _, op := range primitiveCalls() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		errc := make(chan error, 1)
		go func() { errc <- op.call(ctx, b) }()
		select {
		case err := <-errc:
			if err == nil {
				t.Errorf("%s on a paused store: no error", op.name)
			} else if ctx.Err() == nil {
				t.Errorf("%s on a paused store returned before its deadline: %v", op.name, err)
			}
		case <-time.After(20 * time.Second): // a hang detector, far past the deadline
			t.Fatalf("%s on a paused store hangs past its deadline", op.name)
		}
		cancel()
	}
	h.Resume(t)
	resumed = true
	eventually(t, "Get after Resume", func() error {
		v, _, err := b.Get(opCtx(t), "paused")
		if err == nil && string(v) != "v" {
			err = fmt.Errorf("got %q", v)
		}
		return err
	})
}

// testKill: a killed store answers each call with an error before the
// call's deadline (connection refused, not a timeout); after Restart the
// same client works again, and a durable store still has its data.
func testKill(t *testing.T, h harness, b credential.Backend) {
	add(t, b, "killed", "v", time.Hour)
	h.Kill(t)
	for _, op := range primitiveCalls() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := op.call(ctx, b)
		if err == nil {
			t.Errorf("%s on a killed store: no error", op.name)
		} else if ctx.Err() != nil {
			t.Errorf("%s on a killed store waited for its deadline: %v", op.name, err)
		}
		cancel()
	}
	h.Restart(t)
	eventually(t, "Get after Restart", func() error {
		v, _, err := b.Get(opCtx(t), "killed")
		if errors.Is(err, credential.ErrNotFound) && !h.Durable {
			return nil
		}
		if err == nil && string(v) != "v" {
			err = fmt.Errorf("got %q", v)
		}
		return err
	})
	if !add(t, b, "after-restart", "v", time.Hour) {
		t.Fatal("Add after Restart did not store")
	}
}

type primitiveCall struct {
	name string
	call func(ctx context.Context, b credential.Backend) error
}

func primitiveCalls() []primitiveCall {
	return []primitiveCall{
		{"Get", func(ctx context.Context, b credential.Backend) error {
			_, _, err := b.Get(ctx, "killed")
			return err
		}},
		{"Add", func(ctx context.Context, b credential.Backend) error {
			_, err := b.Add(ctx, "new", []byte("v"), time.Hour)
			return err
		}},
		{"Incr", func(ctx context.Context, b credential.Backend) error {
			_, err := b.Incr(ctx, "n", time.Hour)
			return err
		}},
	}
}

// eventually retries fn a few times: the first call after a restart may
// meet a pooled connection to the old process, which the client drops.
func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	var err error
	for range 20 {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}
