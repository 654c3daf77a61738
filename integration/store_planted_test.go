package integration

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/testserver"
	"github.com/redis/go-redis/v9"
)

// Anyone who can write the store (a LAN neighbour of memcache or Redis)
// plants the daily fetch counter at a million, or a lease with no
// expiry, then a new gateway starts with no token stored. It serves the
// first request at once with one fetch, counts its fetches from 1, and
// never answers "daily ceiling reached" or "waiting for another
// instance": a value no gateway wrote is worth no more than an absent one.
func TestPlantedStoreValuesThroughCaddy(t *testing.T) {
	mc := startMemcached(t)
	rd := testserver.Redis(t)
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer rc.Close()
	mraw := memcache.New(mc.Addr)
	seal, _ := credential.NewSealer(testSecret, testAppID)
	day := time.Now().In(time.FixedZone("UTC+8", 8*3600)).Format("2006-01-02")
	stores := []struct {
		name, form string
		tokenKey   func(t *testing.T) string
		set        func(t *testing.T, key, v string)
		del        func(t *testing.T, key string)
	}{
		{
			name: "memcache", form: "store memcache {\n\t\t\tservers " + mc.Addr + "\n\t\t\tprefix gw:\n\t\t}",
			tokenKey: func(t *testing.T) string {
				k := "gw:" + seal.KeyName() + ":access_token"
				if _, err := mraw.Get(k); err != nil {
					t.Fatalf("no token under %s: %v", k, err)
				}
				return k
			},
			set: func(t *testing.T, k, v string) {
				if err := mraw.Set(&memcache.Item{Key: k, Value: []byte(v)}); err != nil {
					t.Fatal(err)
				}
			},
			del: func(t *testing.T, k string) { _ = mraw.Delete(k) },
		},
		{
			name: "redis", form: "store redis {\n\t\t\taddress " + rd.Addr + "\n\t\t}",
			tokenKey: func(t *testing.T) string {
				// Key names are listable (KEYS, SCAN): the attacker's view.
				keys, err := rc.Keys(context.Background(), "*"+seal.KeyName()+":access_token").Result()
				if err != nil || len(keys) != 1 {
					t.Fatalf("token keys %v, %v", keys, err)
				}
				return keys[0]
			},
			set: func(t *testing.T, k, v string) {
				if err := rc.Set(context.Background(), k, v, 0).Err(); err != nil {
					t.Fatal(err)
				}
			},
			del: func(t *testing.T, k string) { rc.Del(context.Background(), k) },
		},
	}
	for _, st := range stores {
		for _, attack := range []string{"counter", "lease"} {
			t.Run(st.name+"/"+attack, func(t *testing.T) {
				mc.FlushAll()
				rc.FlushAll(context.Background())
				f, g := setup(t, st.form)
				if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
					t.Fatalf("before the attack: %s", r.Body)
				}
				key := st.tokenKey(t)
				switch attack {
				case "counter":
					for _, c := range []string{"fetches", "forced"} {
						st.set(t, key+":"+c+":"+day, "1000000") // the key of old
						for i := range 16 {
							st.set(t, key+":"+c+":"+day+":"+strconv.Itoa(i), "1000000")
						}
					}
				case "lease":
					st.set(t, key+":lease", "planted-lease-with-no-expiry")
				}
				st.del(t, key) // no token stored: the next instance must fetch
				before := f.Fetches("stable")
				g = restart(t, f, st.form)
				start := time.Now()
				r := get(t, g.URL+"/cgi-bin/user/info")
				took := time.Since(start)
				if r.errcode() != 0 || r.Status != 200 {
					t.Fatalf("after planting the %s: %d %s", attack, r.Status, r.Body)
				}
				if took > 5*time.Second || f.Fetches("stable") != before+1 {
					t.Fatalf("after planting the %s: served after %v with %d fetches; want at once with 1", attack, took, f.Fetches("stable")-before)
				}
				// The cluster's count: the planted counter overwrote the
				// first instance's slot, so only this fetch counts; after
				// the lease, the first instance's counts too, if it drew
				// another slot.
				s := onlyAccountRow(t, g)
				lo, hi := int64(1), int64(1)
				if attack == "lease" {
					hi = 2
				}
				if s.Fetches < lo || s.Fetches > hi || s.CeilingReached || s.StoreDown {
					t.Fatalf("after planting the %s: fetches_today %d, ceiling_reached %v, store_down %v; want %d–%d, false, false",
						attack, s.Fetches, s.CeilingReached, s.StoreDown, lo, hi)
				}
				if strings.Contains(string(r.Body), "waiting for another instance") {
					t.Fatal(string(r.Body))
				}
			})
		}
	}
}
