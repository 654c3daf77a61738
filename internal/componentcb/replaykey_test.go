package componentcb_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/componentcb"
)

// letterCase returns a copy of a captured push whose msg_signature has
// its letters changed by f: Verify accepts it, so it is the same push.
func letterCase(c captured, f func(string) string) captured {
	r := clone(c.req, c.body)
	q := r.URL.Query()
	q.Set("msg_signature", f(q.Get("msg_signature")))
	r.URL.RawQuery = q.Encode()
	return captured{r, c.body}
}

// The replay mark is canonical (issue 20 §4): an upper-cased (or mixed)
// copy of a captured push is refused as a replay on the instance that
// took it and on a peer sharing the store, so a replayed unauthorized
// does not drop a merchant who authorized again, and a replayed
// authorized costs no api_query_auth.
func TestReplayByLetterCaseRefused(t *testing.T) {
	a := newEnv(t)
	b := a.peer(t, nil)
	mixed := func(s string) string {
		var out strings.Builder
		for i, r := range s {
			if i%2 == 0 {
				r = []rune(strings.ToUpper(string(r)))[0]
			}
			out.WriteRune(r)
		}
		return out.String()
	}
	variants := map[string]func(string) string{"upper": strings.ToUpper, "mixed": mixed}

	const merchant = "wxmerchant000031"
	unauth := authorizeThenRevoke(t, a, merchant)
	mustServe(t, b.h, b.push(authXML("authorized", merchant, b.fake.AddAuthorizer(merchant))), "authorized again")
	for name, f := range variants {
		v := letterCase(unauth, f)
		if v.req.URL.Query().Get("msg_signature") == unauth.req.URL.Query().Get("msg_signature") {
			t.Fatalf("%s: the copy has the same signature", name)
		}
		for inst, e := range map[string]*env{"same instance": a, "peer": b} {
			if c := v.to(e.h); c != http.StatusConflict {
				t.Fatalf("%s-case copy of an unauthorized push to the %s: %d; want 409", name, inst, c)
			}
		}
	}
	if !known(t, a, merchant) {
		t.Fatal("a letter-case copy of an unauthorized push forgot the authorizer")
	}

	// An authorized push: each variant would cost an api_query_auth.
	const other = "wxmerchant000032"
	auth := capture(a.push(authXML("authorized", other, a.fake.AddAuthorizer(other))))
	if c := auth.to(a.h); c != 200 {
		t.Fatalf("authorized: %d", c)
	}
	before := a.fake.QueryAuths.Load()
	for name, f := range variants {
		for inst, e := range map[string]*env{"same instance": a, "peer": b} {
			if c := letterCase(auth, f).to(e.h); c != http.StatusConflict {
				t.Fatalf("%s-case copy of an authorized push to the %s: %d; want 409", name, inst, c)
			}
		}
	}
	if n := a.fake.QueryAuths.Load() - before; n != 0 {
		t.Fatalf("letter-case copies of an authorized push cost %d api_query_auth; want 0", n)
	}
}

// The local guard's eviction is O(1) per insert past its bound (issue 20
// §4): the work is counted, not timed. Past ReplayMax marks the oldest
// leaves first, the guard never holds more, and a recent push is still
// refused.
func TestReplayGuardEvictionBounded(t *testing.T) {
	g := new(componentcb.ReplayGuard)
	now := time.Unix(1_700_000_000, 0)
	const skew = 5 * time.Minute
	const extra = 50_000
	total := componentcb.ReplayMax + extra
	for i := range total {
		if !g.Remember("k"+strconv.Itoa(i), now, skew) {
			t.Fatalf("a new push %d was refused", i)
		}
	}
	marks, fifo, steps := g.Size()
	if marks != componentcb.ReplayMax || fifo != componentcb.ReplayMax {
		t.Fatalf("after %d pushes: %d marks, %d in the FIFO; want %d", total, marks, fifo, componentcb.ReplayMax)
	}
	// One eviction per insert past the bound; the old guard scanned the
	// whole map on each (10,000 steps an insert).
	if steps > 2*extra {
		t.Fatalf("%d inserts past the bound took %d steps; want about %d (O(1) each)", extra, steps, extra)
	}
	if g.Remember("k"+strconv.Itoa(total-1), now, skew) {
		t.Fatal("the newest push was forgotten")
	}
	if !g.Remember("k0", now, skew) {
		t.Fatal("the oldest push was not the one evicted")
	}

	// Expiry, forget and mark again: the FIFO never outgrows the bound,
	// and the work stays linear in the inserts.
	g = new(componentcb.ReplayGuard)
	for i := range total {
		now = now.Add(time.Second) // marks live 10 min: about 600 at a time
		key := "e" + strconv.Itoa(i%700)
		if !g.Remember(key, now, skew) {
			g.Forget(key)
			if !g.Remember(key, now, skew) {
				t.Fatalf("a forgotten push %d was refused", i)
			}
		}
	}
	marks, fifo, steps = g.Size()
	if marks > 700 || fifo > componentcb.ReplayMax || steps > 3*total {
		t.Fatalf("%d inserts with expiry: %d marks, %d in the FIFO, %d steps", total, marks, fifo, steps)
	}
}
