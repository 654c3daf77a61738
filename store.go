package wechat

import (
	"context"
	"time"
)

// sharedStore is the cluster-wide home of an account's token. The only
// implementation is memcache; with none configured the token lives in
// process.
type sharedStore interface {
	// obtain returns a token that is not bad: a peer's from the store, or
	// one fetched under the cluster lease and then stored.
	obtain(ctx context.Context, bad string, ahead bool) (*tokenEntry, error)
	// peek returns the stored token, if any, without fetching.
	peek(ctx context.Context) (*tokenEntry, bool)
	// countFetch adds one fetch to the cluster's count for day and
	// returns the totals; ok is false when the store could not count.
	countFetch(ctx context.Context, day string, force bool) (total, forced int64, ok bool)
	// breakerOpen reports whether the store is being skipped after errors.
	breakerOpen(now time.Time) bool
	close()
}

// storeConfig is the memcache part of the transport's config.
type storeConfig struct {
	servers []string
	prefix  string
	timeout time.Duration
}

func (t *Transport) storeConfig() storeConfig {
	sc := storeConfig{servers: t.Memcache, prefix: t.MemcachePrefix, timeout: time.Duration(t.MemcacheTimeout)}
	if sc.prefix == "" {
		sc.prefix = "wechat:"
	}
	if sc.timeout <= 0 {
		sc.timeout = 100 * time.Millisecond
	}
	return sc
}

// obtainShared goes through the shared store.
func (a *account) obtainShared(ctx context.Context, bad string, ahead bool) (*tokenEntry, error) {
	return a.store.obtain(ctx, bad, ahead)
}
