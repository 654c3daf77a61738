package credential_test

import (
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/testserver"
	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
)

// harness has the fields of storetest.Harness (branch engine), so that
// storetest.Run(t, storetest.Harness(redisHarness(t))) runs the
// conformance suite on each store once that package is merged.
type harness struct {
	Open                         func(t *testing.T) credential.Backend
	Pause, Resume, Kill, Restart func(t *testing.T)
	Durable                      bool
}

// opTimeout bounds one call in these tests, as the engine's store
// timeout does in production.
const opTimeout = 2 * time.Second

// serverHarness wires a testserver's controls into a harness.
func serverHarness(srv *testserver.Server, durable bool, open func(t *testing.T) credential.Backend) harness {
	return harness{
		Open: func(t *testing.T) credential.Backend {
			b := open(t)
			t.Cleanup(func() { _ = b.Close() })
			return b
		},
		Pause:   func(t *testing.T) { srv.Pause(t) },
		Resume:  func(t *testing.T) { srv.Resume(t) },
		Kill:    func(t *testing.T) { srv.Kill(t) },
		Restart: func(t *testing.T) { srv.Restart(t) },
		Durable: durable,
	}
}

// redisHarness: a fresh redis-server without persistence.
func redisHarness(t *testing.T) harness {
	skipIfFast(t)
	srv := testserver.Redis(t)
	return serverHarness(srv, false, func(t *testing.T) credential.Backend {
		return credential.NewRedis(&redis.Options{Addr: srv.Addr, DialTimeout: opTimeout,
			ReadTimeout: opTimeout, WriteTimeout: opTimeout}, "wechat:")
	})
}

func sqlHarness(t *testing.T, srv *testserver.Server, driver string) harness {
	return serverHarness(srv, true, func(t *testing.T) credential.Backend {
		b, err := credential.OpenSQL(driver, srv.DSN, "wechat_store")
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

// mariadbHarness: a fresh MariaDB, through go-sql-driver/mysql.
func mariadbHarness(t *testing.T) harness {
	skipIfFast(t)
	return sqlHarness(t, testserver.MariaDB(t), "mysql")
}

// postgresHarness: a fresh PostgreSQL, through pgx.
func postgresHarness(t *testing.T) harness {
	skipIfFast(t)
	return sqlHarness(t, testserver.Postgres(t), "postgres")
}

// storageHarness: Caddy's file_system storage in one temporary
// directory; every Open is another instance over the same directory.
// There is no server to pause or kill.
func storageHarness(t *testing.T) harness {
	dir := t.TempDir()
	return harness{
		Open: func(t *testing.T) credential.Backend {
			return credential.NewStorage(&certmagic.FileStorage{Path: dir}, "wechat/")
		},
		Durable: true,
	}
}
