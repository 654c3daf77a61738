package integration

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// Issue 20 §4 through a real Caddy: the callback's replay mark is
// canonical. A captured authorized push whose msg_signature is sent
// upper-cased (which the signature check accepts) is refused as a replay,
// alone and across instances sharing memcache, and costs no
// api_query_auth.
func TestComponentCallbackReplayByLetterCase(t *testing.T) {
	mc := startMemcached(t)
	// Two callbacks of one component over one store: the second's
	// fetch_timeout gives it a platform (and a replay guard) of its own,
	// as a second process would have.
	f, g := startComponent(t, 0, func(upstream string) string {
		store := "memcache " + mc.Addr
		return `{
	admin 127.0.0.1:%[2]d
	log {
		output file %[3]s
	}
}
http://127.0.0.1:%[1]d {` + callbackHandle("/a/callback", upstream, store) + callbackHandle("/b/callback", upstream, store+"\n\t\t\tfetch_timeout 9s") + `
}
`
	})
	if _, err := f.PushTicket(g.URL + "/a/callback"); err != nil {
		t.Fatal(err)
	}
	const merchant = "wxmerchant0000078"
	code := f.Authorize(merchant)
	q, body, err := f.SealEvent(f.EventXML("authorized", "<AuthorizerAppid><![CDATA["+merchant+"]]></AuthorizerAppid><AuthorizationCode><![CDATA["+code+"]]></AuthorizationCode>"))
	if err != nil {
		t.Fatal(err)
	}
	send := func(path, sig string) int {
		qq := url.Values{}
		for k, v := range q {
			qq[k] = v
		}
		qq.Set("msg_signature", sig)
		r := do(t, http.MethodPost, g.URL+path+"?"+qq.Encode(), body, "Content-Type", "text/xml")
		return r.Status
	}
	sig := q.Get("msg_signature")
	if c := send("/a/callback", sig); c != 200 {
		t.Fatalf("the push: %d", c)
	}
	queries := f.Fetches("api_query_auth")
	for _, path := range []string{"/a/callback", "/b/callback"} {
		if c := send(path, strings.ToUpper(sig)); c != http.StatusConflict {
			t.Errorf("an upper-cased copy of the push to %s: %d; want 409", path, c)
		}
	}
	if n := f.Fetches("api_query_auth") - queries; n != 0 {
		t.Errorf("letter-case copies cost %d api_query_auth; want 0", n)
	}
}
