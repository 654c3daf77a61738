package credential_test

import (
	"testing"

	"github.com/caddy-wechat/wechat/internal/credential/storetest"
)

// The same conformance suite that memstore and memcache pass, against each
// new store's real server: cold start, 40001 storm, newer wins, a dead lease
// holder, store down and black-holed, corrupt and foreign values, shared
// counters and tickets, and for durable stores a restart with no fetch.
func TestRedisConformance(t *testing.T)    { storetest.Run(t, storetest.Harness(redisHarness(t))) }
func TestMariaDBConformance(t *testing.T)  { storetest.Run(t, storetest.Harness(mariadbHarness(t))) }
func TestPostgresConformance(t *testing.T) { storetest.Run(t, storetest.Harness(postgresHarness(t))) }
func TestStorageConformance(t *testing.T) {
	overlapIfFast(t)
	storetest.Run(t, storetest.Harness(storageHarness(t)))
}
