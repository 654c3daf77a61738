package stores

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/testserver"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/filestorage" // caddy.storage.file_system
)

// parseStore parses a `store <name> {...}` directive the way the wechat
// directive does: the dispenser at `store`, the module at the name.
func parseStore(t *testing.T, input string) Provider {
	t.Helper()
	d := caddyfile.NewTestDispenser(input)
	d.Next() // store
	if !d.NextArg() {
		t.Fatal("no store name")
	}
	unm, err := caddyfile.UnmarshalModule(d, "wechat.stores."+d.Val())
	if err != nil {
		t.Fatalf("parsing %q: %v", input, err)
	}
	return unm.(Provider)
}

func provisionStore(t *testing.T, sp Provider) Provider {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := sp.(caddy.Provisioner).Provision(ctx); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if v, ok := sp.(caddy.Validator); ok {
		if err := v.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
	}
	return sp
}

func openStore(t *testing.T, sp Provider) credential.Backend {
	t.Helper()
	b, err := sp.OpenBackend()
	if err != nil {
		t.Fatalf("OpenBackend: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func storeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// roundTrip adds a value through one backend and reads it through another.
func roundTrip(t *testing.T, a, b credential.Backend) {
	t.Helper()
	if ok, err := a.Add(storeCtx(t), "probe", []byte("sealed"), time.Minute); err != nil || !ok {
		t.Fatalf("Add = %v, %v", ok, err)
	}
	if v, _, err := b.Get(storeCtx(t), "probe"); err != nil || string(v) != "sealed" {
		t.Fatalf("Get = %q, %v", v, err)
	}
}

const storeSecret = "pw-do-not-show-7f3a"

// noSecret fails when s holds the secret.
func noSecret(t *testing.T, what, s string) {
	t.Helper()
	if strings.Contains(s, storeSecret) {
		t.Fatalf("%s shows the password: %s", what, s)
	}
}

func TestStoreCaddyfileErrors(t *testing.T) {
	for _, in := range []string{
		"store redis {\n bogus 1\n}",
		"store redis {\n db -1\n}",
		"store redis a:1 b:2",
		"store redis {\n tls yes\n}",
		"store sql {\n dsn x\n}",
		"store sql {\n driver oracle\n}",
		"store storage {\n storage\n}",
		"store storage {\n prefix\n}",
	} {
		d := caddyfile.NewTestDispenser(in)
		d.Next()
		d.NextArg()
		if _, err := caddyfile.UnmarshalModule(d, "wechat.stores."+d.Val()); err == nil {
			t.Errorf("%q parsed without error", in)
		}
	}
}

func TestRedisStoreModule(t *testing.T) {
	srv := testserver.Redis(t)
	t.Setenv("WECHAT_TEST_REDIS_PW", storeSecret)
	sp := parseStore(t, "store redis {\n address "+srv.Addr+"\n password {env.WECHAT_TEST_REDIS_PW}\n db 2\n prefix gw:\n timeout 500ms\n}")
	provisionStore(t, sp)
	cfg, _ := json.Marshal(sp)
	if !strings.Contains(string(cfg), "{env.WECHAT_TEST_REDIS_PW}") {
		t.Fatalf("JSON lost the placeholder: %s", cfg)
	}
	noSecret(t, "JSON", string(cfg))
	noSecret(t, "StoreID", sp.StoreID())
	if want := "redis:@" + srv.Addr + "/2/gw:"; sp.StoreID() != want {
		t.Fatalf("StoreID = %q, want %q", sp.StoreID(), want)
	}
	// The server has no password: AUTH fails, and the error must not
	// quote the password.
	_, _, err := openStore(t, sp).Get(storeCtx(t), "k")
	if err == nil {
		t.Fatal("AUTH with a password on a server without one: no error")
	}
	noSecret(t, "error", err.Error())

	sp = provisionStore(t, parseStore(t, "store redis "+srv.Addr))
	roundTrip(t, openStore(t, sp), openStore(t, sp))

	// TLS to a plain server fails the handshake: an error, not a hang.
	sp = provisionStore(t, parseStore(t, "store redis "+srv.Addr+" {\n tls\n}"))
	if !strings.HasPrefix(sp.StoreID(), "rediss:") {
		t.Fatalf("StoreID %q does not say TLS", sp.StoreID())
	}
	if _, _, err := openStore(t, sp).Get(storeCtx(t), "probe"); err == nil {
		t.Fatal("TLS to a plain-text server: no error")
	}
}

func TestSQLStoreModule(t *testing.T) {
	for _, tc := range []struct {
		driver string
		start  func(testing.TB) *testserver.Server
		dsn    func(*testserver.Server) string
	}{
		// MariaDB runs without grant tables and PostgreSQL trusts
		// loopback: any password is accepted, which lets the test
		// follow one through the config.
		{"mysql", testserver.MariaDB, func(s *testserver.Server) string {
			return "root:" + storeSecret + "@tcp(" + s.Addr + ")/wechat"
		}},
		{"postgres", testserver.Postgres, func(s *testserver.Server) string {
			return "postgres://postgres:" + storeSecret + "@" + s.Addr + "/postgres?sslmode=disable"
		}},
	} {
		t.Run(tc.driver, func(t *testing.T) {
			srv := tc.start(t)
			t.Setenv("WECHAT_TEST_DSN", tc.dsn(srv))
			in := "store sql {\n driver " + tc.driver + "\n dsn {env.WECHAT_TEST_DSN}\n table gw_tokens\n timeout 2s\n}"
			sp := provisionStore(t, parseStore(t, in))
			cfg, _ := json.Marshal(sp)
			if !strings.Contains(string(cfg), "{env.WECHAT_TEST_DSN}") {
				t.Fatalf("JSON lost the placeholder: %s", cfg)
			}
			noSecret(t, "JSON", string(cfg))
			noSecret(t, "StoreID", sp.StoreID())
			if !strings.Contains(sp.StoreID(), srv.Addr[strings.LastIndex(srv.Addr, ":"):]) || !strings.HasSuffix(sp.StoreID(), "/gw_tokens") {
				t.Fatalf("StoreID %q does not name the server and table", sp.StoreID())
			}
			a, b := openStore(t, sp), openStore(t, sp)
			roundTrip(t, a, b)

			srv.Kill(t)
			_, _, err := a.Get(storeCtx(t), "probe")
			if err == nil || errors.Is(err, credential.ErrNotFound) {
				t.Fatalf("Get on a killed server = %v", err)
			}
			noSecret(t, "error", err.Error())
			srv.Restart(t)
		})
	}
	t.Run("bad dsn", func(t *testing.T) {
		t.Setenv("WECHAT_TEST_DSN", "root:"+storeSecret+"@nonsense(")
		sp := parseStore(t, "store sql {\n driver mysql\n dsn {env.WECHAT_TEST_DSN}\n}")
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		err := sp.(caddy.Provisioner).Provision(ctx)
		if err == nil {
			t.Fatal("a DSN that does not parse provisioned")
		}
		noSecret(t, "error", err.Error())
	})
}

// TestStorageStoreThreeInstances: three storage-module instances over one
// directory, as three gateways sharing a volume, behave as one store.
func TestStorageStoreThreeInstances(t *testing.T) {
	dir := t.TempDir()
	var bs []credential.Backend
	var ids []string
	for range 3 {
		sp := provisionStore(t, parseStore(t, "store storage {\n storage file_system {\n root "+dir+"\n }\n}"))
		ids = append(ids, sp.StoreID())
		bs = append(bs, openStore(t, sp))
	}
	if ids[0] != ids[1] || ids[0] != "storage:file_system:"+dir+":wechat/" {
		t.Fatalf("StoreIDs %q", ids)
	}

	// One lease among 3 × 10 concurrent Adds.
	var won atomic.Int32
	var wg sync.WaitGroup
	for i := range 30 {
		b := bs[i%3]
		wg.Go(func() {
			ok, err := b.Add(storeCtx(t), "lease", []byte{byte(i)}, time.Minute)
			if err != nil {
				t.Errorf("Add: %v", err)
			}
			if ok {
				won.Add(1)
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 {
		t.Fatalf("%d Adds won the lease, want 1", won.Load())
	}

	// Counters are shared: 3 × 50 = 150.
	for i := range 150 {
		b := bs[i%3]
		wg.Go(func() {
			if _, err := b.Incr(storeCtx(t), "fetches", time.Hour); err != nil {
				t.Errorf("Incr: %v", err)
			}
		})
	}
	wg.Wait()
	if v, _, err := bs[2].Get(storeCtx(t), "fetches"); err != nil || string(v) != "150" {
		t.Fatalf("count = %q, %v; want 150", v, err)
	}

	// Newer wins once: two instances swap from the same version.
	roundTrip(t, bs[0], bs[1])
	_, ver1, _ := bs[1].Get(storeCtx(t), "probe")
	_, ver2, _ := bs[2].Get(storeCtx(t), "probe")
	ok1, err1 := bs[1].CompareAndSwap(storeCtx(t), "probe", ver1, []byte("from-1"), time.Minute)
	ok2, err2 := bs[2].CompareAndSwap(storeCtx(t), "probe", ver2, []byte("from-2"), time.Minute)
	if err1 != nil || err2 != nil || !ok1 || ok2 {
		t.Fatalf("CompareAndSwap from one version: %v %v, %v %v; want true then false", ok1, err1, ok2, err2)
	}
	if v, _, _ := bs[0].Get(storeCtx(t), "probe"); string(v) != "from-1" {
		t.Fatalf("Get = %q, want from-1", v)
	}
}
