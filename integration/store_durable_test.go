package integration

import (
	"testing"

	"github.com/caddy-wechat/wechat/internal/testserver"
)

// TestDurableStoresSurviveRestart: a gateway restarted on a durable store
// (SQL on MariaDB and PostgreSQL, Caddy's file storage) within the token's
// life makes no fetch, and its first request waits for none: the account
// holds the stored token as soon as it is provisioned.
func TestDurableStoresSurviveRestart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) string
	}{
		{"mariadb", func(t *testing.T) string {
			t.Setenv("WECHAT_TEST_DSN", "root@tcp("+testserver.MariaDB(t).Addr+")/wechat")
			return "store sql {\n\t\t\tdriver mysql\n\t\t\tdsn {env.WECHAT_TEST_DSN}\n\t\t}"
		}},
		{"postgres", func(t *testing.T) string {
			t.Setenv("WECHAT_TEST_DSN", "postgres://postgres@"+testserver.Postgres(t).Addr+"/postgres?sslmode=disable")
			return "store sql {\n\t\t\tdriver postgres\n\t\t\tdsn {env.WECHAT_TEST_DSN}\n\t\t}"
		}},
		{"storage", func(t *testing.T) string {
			return "store storage {\n\t\t\tstorage file_system {\n\t\t\t\troot " + t.TempDir() + "\n\t\t\t}\n\t\t}"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := tc.store(t)
			f, g := setup(t, store)
			if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
				t.Fatalf("first instance: %s", r.Body)
			}
			if n := f.Fetches("stable"); n != 1 {
				t.Fatalf("first instance made %d fetches, want 1", n)
			}
			for i := range 3 {
				g = restart(t, f, store)
				// Before any request the account holds a token and no
				// fetch was made since the first: the one token WeChat
				// issued, from the store.
				if row := onlyAccountRow(t, g); !row.HasToken || f.Fetches("stable") != 1 {
					t.Fatalf("restart %d: the account did not adopt the stored token at provision (has_token %v, %d fetches)", i, row.HasToken, f.Fetches("stable"))
				}
				if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
					t.Fatalf("restart %d: %s", i, r.Body)
				}
			}
			if n := f.Fetches("stable"); n != 1 {
				t.Errorf("three restarts made %d more fetches, want 0", n-1)
			}
		})
	}
}
