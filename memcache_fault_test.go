package wechat

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

func TestMemcacheDownAndRecovery(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIStable, mc.Addr)
	a := c.account()
	ctx := tctx(t)
	e0, err := a.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Several idle connections in the pool: after the restart they are
	// all dead, and the recovery must not trip over them one by one.
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() { a.s.peek(ctx) })
	}
	wg.Wait()

	mc.Kill()
	before := a.s.attempts.Load()
	for i := range 20 {
		e, err := a.s.obtain(ctx, "", false)
		if err != nil {
			t.Fatalf("obtain %d with memcache down: %v", i, err)
		}
		if e.Source != "fetch" || !c.fake.ValidToken(e.Value) {
			t.Fatalf("obtain %d: source %q, want a local fetch of a valid token", i, e.Source)
		}
	}
	if n := a.s.attempts.Load() - before; n != 1 {
		t.Fatalf("memcache attempts for 20 obtains = %d, want 1 (then the breaker skips memcache)", n)
	}
	if !a.s.breakerOpen(c.clock.Now()) {
		t.Fatal("breaker not open with memcache down")
	}
	if n := c.tokenFetches(); n != 21 {
		t.Fatalf("fetches = %d, want 21 (1 + 20 local)", n)
	}
	if _, _, ok := a.s.countFetch(ctx, "2026-01-01", false); ok {
		t.Fatal("countFetch reported ok with memcache down")
	}
	if n := a.s.attempts.Load() - before; n != 1 {
		t.Fatalf("countFetch touched memcache with the breaker open (%d attempts)", n)
	}
	if n := a.logs.FilterMessageSnippet("memcache failed").Len(); n != 1 {
		t.Fatalf("memcache failure logged %d times, want once per breaker opening", n)
	}
	if n := memcacheErrorCount(t, a.mid, "get"); n != 1 {
		t.Fatalf("memcache_errors_total{op=get} = %v, want 1", n)
	}
	for _, l := range a.logs.All() {
		for _, f := range l.Context {
			if strings.Contains(f.String, e0.Value) || strings.Contains(f.String, mcSecret) {
				t.Fatalf("log %q holds a token or the secret", l.Message)
			}
		}
	}

	// A cold instance still serves, with one memcache attempt in all.
	b := c.account()
	if tok := onlyToken(t, concurrentTokens(t, 50, b)); !c.fake.ValidToken(tok) {
		t.Fatal("cold instance got an invalid token")
	}
	if n := b.s.attempts.Load(); n != 1 {
		t.Fatalf("cold instance: memcache attempts = %d, want 1", n)
	}

	// memcached comes back, empty. After the cool-off the refresher's
	// peek probes it, closes the breaker and writes the token back.
	mc.Restart()
	c.clock.Advance(breakerCooloff + time.Second)
	if !a.s.breakerOpen(c.clock.Now()) {
		t.Fatal("breaker closed before any probe")
	}
	if _, ok := a.s.peek(ctx); ok {
		t.Fatal("peek found a token in a freshly restarted memcached")
	}
	if a.s.breakerOpen(c.clock.Now()) {
		t.Fatal("breaker still open after the probe: memcached is back")
	}
	if n := a.logs.FilterMessageSnippet("memcache reachable again").Len(); n != 1 {
		t.Fatalf("recovery logged %d times, want 1", n)
	}
	cur := a.cur.Load()
	if st := c.stored(); st == nil || st.Value != cur.Value {
		t.Fatal("the token was not written back to memcache after recovery")
	}
	fetches := c.tokenFetches()
	joiner := c.account()
	ej, err := joiner.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ej.Source != "memcache" || ej.Value != cur.Value || c.tokenFetches() != fetches {
		t.Fatalf("after recovery a new instance got source %q and fetched %d times", ej.Source, c.tokenFetches()-fetches)
	}
	// b recovers on its next use as well.
	eb, err := b.s.obtain(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if b.s.breakerOpen(c.clock.Now()) || eb.Source != "memcache" || c.tokenFetches() != fetches {
		t.Fatalf("b did not recover: breaker %v, source %q", b.s.breakerOpen(c.clock.Now()), eb.Source)
	}
}

func TestMemcacheBlackHole(t *testing.T) {
	bh := startBlackHole(t)
	c := newMCCluster(t, tokenAPIStable, bh.Addr())
	c.timeout = 200 * time.Millisecond
	a := c.account()
	ctx := tctx(t)
	e, err := a.Token(ctx)
	if err != nil {
		t.Fatalf("Token with a black-holed memcache: %v", err)
	}
	if e.Source != "fetch" || !c.fake.ValidToken(e.Value) {
		t.Fatalf("source %q: want a local fetch", e.Source)
	}
	if !a.s.breakerOpen(c.clock.Now()) {
		t.Fatal("breaker not open after a memcache timeout")
	}
	for i := range 20 {
		if _, err := a.s.obtain(ctx, "", false); err != nil {
			t.Fatalf("obtain %d: %v", i, err)
		}
	}
	if n := a.s.attempts.Load(); n != 1 {
		t.Fatalf("memcache attempts = %d, want 1: only the first call may wait for the timeout", n)
	}
	for deadline := time.Now().Add(5 * time.Second); bh.accepted() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // the accept loop may lag behind the kernel's handshake
	}
	if n := bh.accepted(); n != 1 {
		t.Fatalf("connections to the black hole = %d, want 1", n)
	}
	if n := a.logs.FilterMessageSnippet("memcache failed").Len(); n != 1 {
		t.Fatalf("failure logged %d times, want 1", n)
	}
	if n := memcacheErrorCount(t, a.mid, "get"); n != 1 {
		t.Fatalf("memcache_errors_total{op=get} = %v, want 1", n)
	}
	if _, ok := a.s.peek(ctx); ok {
		t.Fatal("peek succeeded against a black hole")
	}
	if n := a.s.attempts.Load(); n != 1 {
		t.Fatalf("peek went to memcache with the breaker open (%d attempts)", n)
	}

	// After the cool-off one probe goes out; it times out too, and the
	// breaker stays open without logging again.
	c.clock.Advance(breakerCooloff + time.Second)
	for range 10 {
		if _, err := a.s.obtain(ctx, "", false); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.s.attempts.Load(); n != 2 {
		t.Fatalf("memcache attempts after the cool-off = %d, want 2 (one probe)", n)
	}
	if !a.s.breakerOpen(c.clock.Now()) {
		t.Fatal("breaker closed after a failed probe")
	}
	if n := a.logs.FilterMessageSnippet("memcache failed").Len(); n != 1 {
		t.Fatalf("failure logged %d times, want 1 for the whole outage", n)
	}
}

func TestMemcacheFlushAll(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIClassic, mc.Addr)
	a, b := c.account(), c.account()
	old := onlyToken(t, concurrentTokens(t, 20, a, b))
	if n := c.tokenFetches(); n != 1 {
		t.Fatalf("warm-up fetches = %d, want 1", n)
	}

	mc.FlushAll()
	if c.stored() != nil {
		t.Fatal("flush_all left the token in memcache")
	}
	a.cur.Store(nil) // cold in-process caches, e.g. after restarts
	b.cur.Store(nil)
	n := c.account()
	tok := onlyToken(t, concurrentTokens(t, 90, a, b, n))
	if f := c.tokenFetches(); f != 2 {
		t.Fatalf("fetches after flush_all = %d, want exactly 1 more", f-1)
	}
	if tok == old || !c.fake.ValidToken(tok) {
		t.Fatal("after flush_all the cluster did not converge on one new token")
	}
	if st := c.stored(); st == nil || st.Value != tok {
		t.Fatal("the new token was not stored")
	}
}

func TestMemcacheUnusableValue(t *testing.T) {
	mc := startMemcached(t)
	now := time.Now()
	ts := func(t time.Time) string { return fmt.Sprint(t.UnixNano()) }
	cases := map[string]string{
		"garbage":        "garbage \x00\x01 value",
		"json":           `{"access_token":"ACCESS_TOKEN_FROM_ELSEWHERE","expires_in":7200}`,
		"older version":  "w0 " + ts(now) + " " + ts(now.Add(time.Hour)) + " OLD_FORMAT_TOKEN",
		"other version":  "w2 " + ts(now) + " " + ts(now.Add(time.Hour)) + " NEW_FORMAT_TOKEN",
		"bad number":     "w1 yesterday " + ts(now.Add(time.Hour)) + " TOKEN",
		"empty token":    "w1 " + ts(now) + " " + ts(now.Add(time.Hour)) + " ",
		"expired":        "w1 " + ts(now.Add(-3*time.Hour)) + " " + ts(now.Add(-time.Hour)) + " EXPIRED_TOKEN",
		"expiry < fetch": "w1 " + ts(now) + " " + ts(now.Add(-time.Hour)) + " TOKEN",
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			c := newMCCluster(t, tokenAPIStable, mc.Addr)
			c.prefix = "wechat:" + strings.ReplaceAll(name, " ", "_") + ":"
			key := c.prefix + mcKey
			if err := c.raw.Set(&memcache.Item{Key: key, Value: []byte(value), Expiration: 3600}); err != nil {
				t.Fatal(err)
			}
			a := c.account()
			for range 3 {
				if _, ok := a.s.peek(tctx(t)); ok {
					t.Fatal("peek accepted an unusable value")
				}
			}
			tok := onlyToken(t, concurrentTokens(t, 30, a))
			if n := c.tokenFetches(); n != 1 {
				t.Fatalf("fetches = %d, want 1", n)
			}
			if a.cur.Load().Source != "fetch" {
				t.Fatal("the unusable value was used")
			}
			if st := c.stored(); st == nil || st.Value != tok {
				t.Fatal("the unusable value was not overwritten with the fetched token")
			}
			if n := a.logs.FilterMessageSnippet("unusable").Len(); n != 1 {
				t.Fatalf("unusable value logged %d times, want once", n)
			}
			for _, l := range a.logs.All() {
				for _, f := range l.Context {
					if strings.Contains(f.String, "TOKEN") || strings.Contains(f.String, tok) {
						t.Fatalf("log %q quotes the stored value", l.Message)
					}
				}
			}
			if a.s.breakerOpen(c.clock.Now()) {
				t.Fatal("a bad value opened the breaker: it is not a memcache failure")
			}
			b := c.account()
			if e, err := b.Token(tctx(t)); err != nil || e.Value != tok || c.tokenFetches() != 1 {
				t.Fatalf("a second instance did not use the repaired value: %v", err)
			}
		})
	}
}

func TestMemcacheCountFetch(t *testing.T) {
	mc := startMemcached(t)
	c := newMCCluster(t, tokenAPIStable, mc.Addr)
	a, b := c.account(), c.account()
	ctx := tctx(t)
	day := "2026-02-03"
	check := func(s *memcacheStore, force bool, wantTotal, wantForced int64) {
		t.Helper()
		total, forced, ok := s.countFetch(ctx, day, force)
		if !ok || total != wantTotal || forced != wantForced {
			t.Fatalf("countFetch(force=%v) = %d, %d, %v; want %d, %d, true", force, total, forced, ok, wantTotal, wantForced)
		}
	}
	check(a.s, false, 1, 0)
	check(b.s, true, 2, 1)
	check(a.s, false, 3, 1)
	// Another day is a separate count.
	if total, _, ok := a.s.countFetch(ctx, "2026-02-04", false); !ok || total != 1 {
		t.Fatalf("next day's count = %d, %v", total, ok)
	}
	// A junk counter restarts instead of failing forever.
	if err := c.raw.Set(&memcache.Item{Key: c.key() + ":fetches:" + day, Value: []byte("junk")}); err != nil {
		t.Fatal(err)
	}
	check(a.s, false, 1, 1)
	if a.s.breakerOpen(c.clock.Now()) {
		t.Fatal("a junk counter opened the breaker")
	}
	// The forced counter is shared too.
	it, err := c.raw.Get(c.key() + ":forced:" + day)
	if err != nil || string(it.Value) != "1" {
		t.Fatalf("forced counter: %v", err)
	}

	// A real fetch is counted in the cluster's count and shown in status.
	if _, err := a.Token(ctx); err != nil {
		t.Fatal(err)
	}
	today := c.clock.Now().In(beijing).Format("2006-01-02")
	it, err = c.raw.Get(c.key() + ":fetches:" + today)
	if err != nil || string(it.Value) != "1" {
		t.Fatalf("today's shared count after one fetch: %v", err)
	}
	if n := a.fetchesToday(); n != 1 {
		t.Fatalf("fetchesToday = %d, want 1", n)
	}
}

func TestMemcacheKeys(t *testing.T) {
	if k := memcacheKeyBase("wechat:", "abc"); k != "wechat:abc" {
		t.Fatalf("plain key changed: %q", k)
	}
	for _, prefix := range []string{"we chat:", "tab\t", "nl\n", "del\x7f", strings.Repeat("p", 240)} {
		k := memcacheKeyBase(prefix, mcKey)
		if len(k)+len(":fetches:2006-01-02") > 250 {
			t.Fatalf("key for prefix %q too long: %d", prefix, len(k))
		}
		for i := 0; i < len(k); i++ {
			if k[i] <= ' ' || k[i] == 0x7f {
				t.Fatalf("key for prefix %q holds byte %#x", prefix, k[i])
			}
		}
		if k == memcacheKeyBase("other", mcKey) {
			t.Fatal("different prefixes share a key")
		}
	}
	// Round trip of the value encoding.
	e := newEntry("TOKEN_abc-123", 7200, time.Now(), "fetch")
	d, err := decodeEntry(encodeEntry(e))
	if err != nil {
		t.Fatal(err)
	}
	if d.Value != e.Value || !d.FetchedAt.Equal(e.FetchedAt) || !d.ExpiresAt.Equal(e.ExpiresAt) || d.Source != "memcache" || !d.useBy.Equal(e.useBy) {
		t.Fatalf("round trip changed the entry: %+v", d)
	}
	if !strings.HasPrefix(string(encodeEntry(e)), "w1 ") {
		t.Fatal("value is not versioned")
	}
}
