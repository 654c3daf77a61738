package credential_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/testserver"
	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
)

// BenchmarkStoreRoundTrip measures one Get and one Add per store, on
// loopback: what a gateway pays per store call (the hot path makes none).
func BenchmarkStoreRoundTrip(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) credential.Backend
	}{
		{"redis", func(b *testing.B) credential.Backend {
			srv := testserver.Redis(b)
			return credential.NewRedis(&redis.Options{Addr: srv.Addr}, "wechat:")
		}},
		{"mariadb", func(b *testing.B) credential.Backend { return openSQL(b, "mysql", testserver.MariaDB(b).DSN) }},
		{"postgres", func(b *testing.B) credential.Backend { return openSQL(b, "postgres", testserver.Postgres(b).DSN) }},
		{"storage", func(b *testing.B) credential.Backend {
			return credential.NewStorage(&certmagic.FileStorage{Path: b.TempDir()}, "wechat/")
		}},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			be := st.open(b)
			defer be.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := be.Add(ctx, "token", []byte("sealed-value-of-a-token"), time.Hour); err != nil {
				b.Fatal(err)
			}
			b.Run("Get", func(b *testing.B) {
				for b.Loop() {
					if _, _, err := be.Get(ctx, "token"); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("Add", func(b *testing.B) {
				i := 0
				for b.Loop() {
					i++
					if _, err := be.Add(ctx, "lease"+strconv.Itoa(i), []byte("holder"), time.Minute); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

func openSQL(b *testing.B, driver, dsn string) credential.Backend {
	be, err := credential.OpenSQL(driver, dsn, "wechat_store")
	if err != nil {
		b.Fatal(err)
	}
	return be
}
