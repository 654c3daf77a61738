package wechat

import (
	"strings"
	"testing"
)

// Everything that changes how a credential is fetched or shared names a
// different account.
func TestAccountKeyCoversFetchSettings(t *testing.T) {
	base := accountKey("wx", "s", "stable", "memcache:a", "https://api.weixin.qq.com,|10s")
	for _, k := range []string{
		accountKey("wx", "s2", "stable", "memcache:a", "https://api.weixin.qq.com,|10s"),
		accountKey("wx", "s", "classic", "memcache:a", "https://api.weixin.qq.com,|10s"),
		accountKey("wx", "s", "stable", "memcache:b", "https://api.weixin.qq.com,|10s"),
		accountKey("wx", "s", "stable", "memcache:a|p2:", "https://api.weixin.qq.com,|10s"),
		accountKey("wx", "s", "stable", "memcache:a", "https://api2.weixin.qq.com,|10s"),
		accountKey("wx", "s", "stable", "memcache:a", "https://api.weixin.qq.com,|5s"),
	} {
		if k == base {
			t.Fatalf("two settings share the key %s", k)
		}
	}
	if strings.Contains(base, "s\x00") || strings.Contains(base, ":s:") {
		t.Fatal("the key holds the secret")
	}
}
