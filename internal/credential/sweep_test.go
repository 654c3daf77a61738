package credential_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/testserver"
	"github.com/caddyserver/certmagic"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// Stores without TTLs of their own delete expired keys (replay marks,
// daily counters, leases): a write starts a sweep, one sweep deletes at
// most 256, and live and never-expiring keys stay.
func TestSQLSweepsExpiredRows(t *testing.T) {
	skipIfFast(t)
	for _, tc := range []struct {
		name, driver, rawDriver string
		srv                     func(testing.TB) *testserver.Server
	}{
		{"mariadb", "mysql", "mysql", testserver.MariaDB},
		{"postgres", "postgres", "pgx", testserver.Postgres},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.srv(t)
			open := func() *credential.SQL {
				b, err := credential.OpenSQL(tc.driver, srv.DSN, "wechat_store")
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			raw, err := sql.Open(tc.rawDriver, srv.DSN)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			rows := func() int {
				var n int
				if err := raw.QueryRow(`SELECT COUNT(*) FROM wechat_store`).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			testSweep(t, func() sweeper { return sqlSweeper{open()} }, rows)
		})
	}
}

func TestStorageSweepsExpiredFiles(t *testing.T) {
	dir := t.TempDir()
	files := func() int {
		ents, err := os.ReadDir(filepath.Join(dir, "wechat"))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range ents {
			if !e.IsDir() {
				n++
			}
		}
		return n
	}
	testSweep(t, func() sweeper {
		return storageSweeper{credential.NewStorage(&certmagic.FileStorage{Path: dir}, "wechat/")}
	}, files)
	// Files under the prefix that are not the gateway's are left alone.
	if err := os.WriteFile(filepath.Join(dir, "wechat", "not-ours"), []byte("{}x"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := credential.NewStorage(&certmagic.FileStorage{Path: dir}, "wechat/")
	if _, err := st.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "wechat", "not-ours")); err != nil {
		t.Fatal("the sweep deleted a file that is not an envelope")
	}
}

type sweeper interface {
	credential.Backend
	sweep(ctx context.Context) (int, error)
}

type sqlSweeper struct{ *credential.SQL }

func (s sqlSweeper) sweep(ctx context.Context) (int, error) {
	n, err := s.Sweep(ctx)
	return int(n), err
}

type storageSweeper struct{ *credential.Storage }

func (s storageSweeper) sweep(ctx context.Context) (int, error) { return s.Sweep(ctx) }

func testSweep(t *testing.T, open func() sweeper, count func() int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A first instance writes 300 short-lived keys (marks, counters),
	// 3 live ones and 2 that never expire.
	a := open()
	for i := range 300 {
		if ok, err := a.Add(ctx, fmt.Sprintf("wechat:acct:once:%04d", i), []byte("m"), 1500*time.Millisecond); err != nil || !ok {
			t.Fatal(ok, err)
		}
	}
	for i := range 3 {
		if ok, err := a.Add(ctx, fmt.Sprintf("wechat:acct:live:%d", i), []byte("v"), time.Hour); err != nil || !ok {
			t.Fatal(ok, err)
		}
	}
	for i := range 2 {
		if ok, err := a.Add(ctx, fmt.Sprintf("wechat:acct:aux:%d", i), []byte("v"), 0); err != nil || !ok {
			t.Fatal(ok, err)
		}
	}
	if err := a.Close(); err != nil { // waits for the sweep its first write started
		t.Fatal(err)
	}
	if n := count(); n != 305 {
		t.Fatalf("%d keys before any could expire; want 305", n)
	}
	time.Sleep(1600 * time.Millisecond) // the 300 expire
	b := open()
	// The bound is on rows deleted (SQL) or files looked at (storage,
	// which lists them all but reads at most 256).
	n, err := b.sweep(ctx)
	if err != nil || n > 256 || n < 250 {
		t.Fatalf("one sweep deleted %d (%v); want the bound, 250–256", n, err)
	}
	if left := count(); left != 305-n {
		t.Fatalf("%d keys left; want %d", left, 305-n)
	}
	_ = b.Close()
	// A write of a new instance starts the next sweep by itself.
	c := open()
	if _, err := c.Add(ctx, "wechat:acct:live:new", []byte("v"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 6 {
		t.Fatalf("%d keys after a write's sweep; want 6 (the live and never-expiring ones)", n)
	}
	d := open()
	defer d.Close()
	for _, k := range []string{"wechat:acct:live:0", "wechat:acct:live:2", "wechat:acct:aux:1", "wechat:acct:live:new"} {
		if _, _, err := d.Get(ctx, k); err != nil {
			t.Fatalf("%s: %v after the sweep", k, err)
		}
	}
	if _, _, err := d.Get(ctx, "wechat:acct:once:0001"); err != credential.ErrNotFound {
		t.Fatal("an expired key is still found")
	}
}
