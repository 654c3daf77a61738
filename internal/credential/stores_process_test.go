package credential_test

import (
	"os"
	"testing"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/storetest"
	"github.com/caddy-wechat/wechat/internal/testserver"
	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
)

// The multi-process case of the conformance suite (storetest.Processes)
// on each store with a server here, and on file storage: three processes,
// 120 authorizers expiring at once, every call served, one fetch per
// authorizer, no refresh token lost, no store error.
func TestRedisAcrossProcesses(t *testing.T) {
	skipIfFast(t)
	srv := testserver.Redis(t)
	processes(t, "redis", srv.Addr)
}

func TestMariaDBAcrossProcesses(t *testing.T) {
	skipIfFast(t)
	srv := testserver.MariaDB(t)
	processes(t, "mysql", srv.DSN)
}

func TestPostgresAcrossProcesses(t *testing.T) {
	skipIfFast(t)
	srv := testserver.Postgres(t)
	processes(t, "postgres", srv.DSN)
}

func TestStorageAcrossProcessesCluster(t *testing.T) {
	overlapIfFast(t)
	processes(t, "storage", t.TempDir())
}

const (
	procStoreEnv = "WECHAT_CLUSTER_STORE"
	procAddrEnv  = "WECHAT_CLUSTER_ADDR"
)

func processes(t *testing.T, kind, addr string) {
	open := func(t *testing.T) credential.Backend { return openProcStore(t, kind, addr) }
	storetest.Processes(t, storetest.Harness{Open: open, Durable: true}, "TestClusterProcessHelper",
		[]string{procStoreEnv + "=" + kind, procAddrEnv + "=" + addr})
}

// openProcStore connects to a store as a new gateway process would.
func openProcStore(t *testing.T, kind, addr string) credential.Backend {
	var b credential.Backend
	switch kind {
	case "redis":
		b = credential.NewRedis(&redis.Options{Addr: addr, DialTimeout: opTimeout, ReadTimeout: opTimeout, WriteTimeout: opTimeout}, "wechat:")
	case "mysql", "postgres":
		s, err := credential.OpenSQL(kind, addr, "wechat_store")
		if err != nil {
			t.Fatal(err)
		}
		b = s
	case "storage":
		b = credential.NewStorage(&certmagic.FileStorage{Path: addr}, "wechat/")
	default:
		t.Fatalf("store %q", kind)
	}
	return b
}

// TestClusterProcessHelper is one gateway process of the cases above;
// run by itself it does nothing.
func TestClusterProcessHelper(t *testing.T) {
	kind := os.Getenv(procStoreEnv)
	if kind == "" {
		t.Skip("a helper process of the AcrossProcesses tests")
	}
	if !storetest.ProcessChild(t, func(t *testing.T) credential.Backend { return openProcStore(t, kind, os.Getenv(procAddrEnv)) }) {
		t.Fatal("started without the cluster environment")
	}
}
