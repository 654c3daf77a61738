package credential_test

import (
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/testserver"
)

// Three instances on one durable store, 1,000 authorizers whose refresh
// tokens rotate every third fetch (the old one dead at once), five hours
// of renewals and ticket pushes, a restart of all three, three more
// hours. No refresh token is lost (no 61023, the store holds WeChat's
// current one for every authorizer) and fetches stay at the minimum: one
// per authorizer per token life for the whole cluster, none at restart.
func TestOpenPlatformClusterRestart(t *testing.T) {
	overlapIfFast(t)
	if testing.Short() {
		t.Skip("1,000 authorizers")
	}
	clusterRestart(t, newOpEnv(t, true))
}

// The same on PostgreSQL, a real durable store: every lease, sealed token
// and rotated refresh token goes through the SQL backend.
func TestOpenPlatformClusterRestartPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 authorizers")
	}
	srv := testserver.Postgres(t)
	e := newOpEnv(t, false)
	e.store = sqlOpener{t: t, dsn: srv.DSN}
	clusterRestart(t, e)
}

// sqlOpener opens a new SQL backend per instance, as separate gateways do.
type sqlOpener struct {
	t   *testing.T
	dsn string
}

func (o sqlOpener) Open() credential.Backend {
	b, err := credential.OpenSQL("postgres", o.dsn, "wechat_store")
	if err != nil {
		o.t.Fatal(err)
	}
	o.t.Cleanup(func() { _ = b.Close() })
	return b
}

func clusterRestart(t *testing.T, e *opEnv) {
	const nAuth = 1000
	e.fake.RotateEvery = 3
	nodes := []*node{e.node(), e.node(), e.node()}
	e.push(t, nodes[0])
	ids, _ := e.fake.AddAuthorizers(nAuth)
	for i, id := range ids { // each authorized event reaches one instance
		e.seed(t, nodes[i%3], []string{id})
	}
	useAll := func(nodes []*node) {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, id := range ids {
					tok, _, err := n.reg.Token(ctx, id)
					if err != nil {
						t.Errorf("%s: %v", id, err)
						return
					}
					if !e.fake.Valid(tok.Value) {
						t.Errorf("%s: served a token WeChat rejects", id)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	useAll(nodes)
	if got := e.fake.AuthorizerFetches.Load(); got != nAuth {
		t.Fatalf("cold cluster: %d authorizer fetches, want %d", got, nAuth)
	}
	if got := e.fake.ComponentFetches.Load(); got != 1 {
		t.Fatalf("cold cluster: %d component fetches, want 1", got)
	}

	run := func(nodes []*node, minutes int) {
		for m := 1; m <= minutes; m++ {
			e.clock.Advance(time.Minute)
			if m%10 == 0 {
				e.push(t, nodes[m/10%len(nodes)])
			}
			for _, n := range nodes {
				n.sched.Settle()
			}
			if m%30 == 0 {
				useAll(nodes)
			}
		}
	}
	run(nodes, 300)
	before := e.fake.AuthorizerFetches.Load()
	// Lower bound: a token lives 120 min; upper: the first renewal of a
	// burst is spread over the first life (one early renewal), then one
	// per ~115 min.
	perAuth := float64(before) / nAuth
	t.Logf("5 h, 3 instances: %d authorizer fetches (%.2f per authorizer), %d rotations, %d component fetches",
		before, perAuth, e.fake.Rotations.Load(), e.fake.ComponentFetches.Load())
	if perAuth > 4.2 || perAuth < 3 {
		t.Fatalf("%.2f fetches per authorizer in 5 h, want 3–4.2", perAuth)
	}
	for _, id := range ids {
		if e.fake.Fetches(id) > 5 {
			t.Fatalf("%s fetched %d times in 5 h", id, e.fake.Fetches(id))
		}
	}

	// Restart all three. A token whose renewal was due (in its last
	// AuthorizerWindow.Max) may be renewed by the new instances; any
	// other fetch is one too many.
	probe := e.node()
	left := map[string]time.Duration{}
	perID := map[string]int{}
	for _, id := range ids {
		tk := probe.shared.Load(ctx, "authorizer:"+id)
		if tk == nil {
			t.Fatalf("%s: no usable token in the store", id)
		}
		left[id] = tk.ExpiresAt.Sub(e.clock.Now())
		perID[id] = e.fake.Fetches(id)
	}
	for _, n := range nodes {
		n.close()
	}
	nodes = []*node{e.node(), e.node(), e.node()}
	useAll(nodes)
	for _, n := range nodes {
		n.sched.Settle()
	}
	due := 0
	for _, id := range ids {
		if d := e.fake.Fetches(id) - perID[id]; d > 0 {
			if d > 1 || left[id] > credential.AuthorizerWindow.Max {
				t.Fatalf("restart: %s fetched %d times with %s left", id, d, left[id])
			}
			due++
		}
	}
	t.Logf("restart of all three: %d authorizer fetches, all renewals that were due (token in its last %s); 0 extra",
		e.fake.AuthorizerFetches.Load()-before, credential.AuthorizerWindow.Max)
	run(nodes, 180)

	if e.fake.InfoCalls.Load() != 0 {
		t.Fatalf("%d refresh tokens were lost (61023 recoveries)", e.fake.InfoCalls.Load())
	}
	if e.fake.Rotations.Load() < nAuth {
		t.Fatalf("only %d rotations: the test did not exercise rotation", e.fake.Rotations.Load())
	}
	probe = e.node()
	for _, id := range ids {
		a, err := probe.reg.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		v, err := a.Cache().Aux().Get(ctx, credential.AuxRefreshToken)
		if err != nil || string(v) != e.fake.RefreshToken(id) {
			t.Fatalf("%s: the store does not hold the current refresh token", id)
		}
	}
	total := e.fake.AuthorizerFetches.Load()
	t.Logf("8 h with a restart: %d authorizer fetches (%.2f per authorizer), %d rotations, 0 lost",
		total, float64(total)/nAuth, e.fake.Rotations.Load())
}
