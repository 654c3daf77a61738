package credential_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memstore"
	"github.com/caddy-wechat/wechat/internal/credential/storetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const (
	compAppID  = "wxcomponent0000001"
	compSecret = "component-secret-0123456789abcdef"
)

// platObs counts open-platform events.
type platObs struct {
	renewed, renewFailed, rotated, recovered, notRecovered, forgotten atomic.Int64
}

func (o *platObs) Renewed(err error) {
	if err != nil {
		o.renewFailed.Add(1)
	} else {
		o.renewed.Add(1)
	}
}
func (o *platObs) Rotated() { o.rotated.Add(1) }
func (o *platObs) Recovered(ok bool) {
	if ok {
		o.recovered.Add(1)
	} else {
		o.notRecovered.Add(1)
	}
}
func (o *platObs) Forgotten(string) { o.forgotten.Add(1) }

// node is one gateway instance of the open platform.
type node struct {
	shared *credential.Shared
	comp   *credential.Cache
	plat   *credential.Platform
	reg    *credential.Registry
	sched  *credential.Scheduler
	obs    *platObs
}

type opEnv struct {
	t     *testing.T
	clock *storetest.Clock
	fake  *storetest.OpenPlatform
	store interface{ Open() credential.Backend } // nil: no store
	logs  *observer.ObservedLogs
	log   *zap.Logger
	rnd   atomic.Uint64
}

func newOpEnv(t *testing.T, withStore bool) *opEnv {
	clock := storetest.NewClock()
	core, logs := observer.New(zapcore.DebugLevel)
	e := &opEnv{t: t, clock: clock, fake: storetest.NewOpenPlatform(clock, compAppID, compSecret), logs: logs, log: zap.New(core)}
	if withStore {
		m := memstore.New()
		m.Now = clock.Now
		e.store = m
	}
	return e
}

// rand is a deterministic [0,1) sequence, so runs are repeatable.
func (e *opEnv) rand() float64 {
	x := e.rnd.Add(0x9E3779B97F4A7C15)
	x ^= x >> 31
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 29
	return float64(x>>11) / (1 << 53)
}

func (e *opEnv) node() *node {
	n := &node{sched: credential.NewScheduler(e.clock.Now), obs: &platObs{}}
	if e.store != nil {
		seal, err := credential.NewSealer(compSecret, compAppID)
		if err != nil {
			e.t.Fatal(err)
		}
		n.shared = credential.NewShared(e.store.Open(), seal, credential.SharedOptions{Now: e.clock.Now, OpTimeout: time.Second, Durable: true, Logger: e.log})
	}
	base, _ := url.Parse("https://api.weixin.qq.com")
	rt := e.fake.Transport()
	n.comp = credential.New(credential.Config{
		Name:      "component_access_token",
		AppID:     compAppID,
		Source:    &credential.ComponentTokenSource{RT: rt, Bases: []*url.URL{base}, AppID: compAppID, Secret: compSecret, Now: e.clock.Now},
		Shared:    n.shared,
		Scheduler: n.sched,
		Window:    credential.ComponentWindow,
		Now:       e.clock.Now,
		Rand:      e.rand,
		Logger:    e.log,
		Sleep:     e.clock.Sleep,
	})
	n.plat = &credential.Platform{Component: n.comp, RT: rt, Bases: []*url.URL{base}, AppID: compAppID, Secret: compSecret,
		Now: e.clock.Now, Logger: e.log, Events: n.obs}
	n.reg = credential.NewRegistry(n.plat, credential.RegistryConfig{Shared: n.shared, Scheduler: n.sched, Now: e.clock.Now, Rand: e.rand, Logger: e.log, Ceiling: -1, Sleep: e.clock.Sleep})
	e.t.Cleanup(func() { n.close() })
	return n
}

func (n *node) close() {
	n.reg.Close()
	n.comp.Close()
	n.sched.Settle()
}

// push stores a fresh ticket as the callback handler does.
func (e *opEnv) push(t *testing.T, n *node) {
	if err := n.comp.Aux().Put(context.Background(), credential.AuxVerifyTicket, []byte(e.fake.PushTicket())); err != nil {
		t.Fatal(err)
	}
	n.comp.ClearBackoff()
}

// authorize runs the authorized-event flow: api_query_auth, then store.
func (e *opEnv) authorize(t *testing.T, n *node, appid string) {
	au, err := n.plat.QueryAuth(context.Background(), e.fake.AddAuthorizer(appid))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.reg.Authorize(context.Background(), au); err != nil {
		t.Fatal(err)
	}
}

// seed stores appids' current refresh tokens directly (a bulk import).
func (e *opEnv) seed(t *testing.T, n *node, appids []string) {
	for _, id := range appids {
		if err := n.reg.Authorize(context.Background(), &credential.Authorization{AuthorizerAppID: id, RefreshToken: e.fake.RefreshToken(id)}); err != nil {
			t.Fatal(err)
		}
	}
}

var ctx = context.Background()

func TestComponentTokenNeedsTicket(t *testing.T) {
	for _, store := range []bool{false, true} {
		e := newOpEnv(t, store)
		n := e.node()
		_, err := n.comp.Token(ctx)
		if !errors.Is(err, credential.ErrNoTicket) {
			t.Fatalf("no ticket: %v", err)
		}
		e.push(t, n) // ends the backoff at once
		tok, err := n.comp.Token(ctx)
		if err != nil || !e.fake.Valid(tok.Value) {
			t.Fatalf("after push: %v", err)
		}
		if got := e.fake.ComponentFetches.Load(); got != 1 {
			t.Fatalf("component fetches = %d", got)
		}
	}
}

func TestComponentTicketExpiredOrInvalid(t *testing.T) {
	e := newOpEnv(t, true)
	n := e.node()
	ticket := e.fake.PushTicket()
	_ = n.comp.Aux().Put(ctx, credential.AuxVerifyTicket, []byte(ticket))
	e.clock.Advance(13 * time.Hour)
	_, err := n.comp.Token(ctx)
	var ae *credential.APIError
	if !errors.As(err, &ae) || ae.Code != 61005 || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("61005: %v", err)
	}
	if strings.Contains(err.Error(), ticket) || strings.Contains(err.Error(), compSecret) {
		t.Fatal("error quotes the ticket or secret")
	}
	_ = n.comp.Aux().Put(ctx, credential.AuxVerifyTicket, []byte("forged-ticket"))
	n.comp.ClearBackoff()
	_, err = n.comp.Token(ctx)
	if !errors.As(err, &ae) || ae.Code != 61006 || !strings.Contains(err.Error(), "invalid") {
		t.Fatalf("61006: %v", err)
	}
}

// A peer reads the ticket another instance's callback stored.
func TestTicketSharedAndOneComponentFetchPerCluster(t *testing.T) {
	e := newOpEnv(t, true)
	a, b, c := e.node(), e.node(), e.node()
	e.push(t, a)
	var wg sync.WaitGroup
	for _, n := range []*node{a, b, c, a, b, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := n.comp.Token(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := e.fake.ComponentFetches.Load(); got != 1 {
		t.Fatalf("component fetches across 3 instances = %d, want 1", got)
	}
}

// A 40001 about the component token (the probe agrees):
// compare-and-invalidate, one fetch, one replay; the next rejection of
// the old token costs nothing.
func TestComponentTokenRejectedReplay(t *testing.T) {
	e := newOpEnv(t, false)
	n := e.node()
	e.push(t, n)
	old, _ := n.comp.Token(ctx)
	e.clock.Advance(2 * time.Minute) // past MinAge
	e.fake.RevokeToken(old.Value)
	fresh, replay, err := n.comp.Rejected(ctx, old)
	if err != nil || !replay || fresh.Value == old.Value {
		t.Fatalf("rejected: %v %v", replay, err)
	}
	if _, replay, _ := n.comp.Rejected(ctx, old); !replay {
		t.Fatal("a second rejection of the old token must replay with the current one")
	}
	if got := e.fake.ComponentFetches.Load(); got != 2 {
		t.Fatalf("fetches = %d, want 2", got)
	}
}

func TestAuthorizedEventSeedsTokenAndWarmPathAllocatesNothing(t *testing.T) {
	e := newOpEnv(t, true)
	n := e.node()
	e.push(t, n)
	e.authorize(t, n, "wxmerchant000001")
	tok, a, err := n.reg.Token(ctx, "wxmerchant000001")
	if err != nil || !e.fake.Valid(tok.Value) {
		t.Fatal(err)
	}
	if got := e.fake.AuthorizerFetches.Load(); got != 0 {
		t.Fatalf("api_query_auth's token must be used: %d fetches", got)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		x := n.reg.Lookup("wxmerchant000001")
		if x != a {
			panic("lookup")
		}
		if _, err := x.Cache().Token(ctx); err != nil {
			panic(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("warm lookup+token allocs = %v", allocs)
	}
}

func TestUnknownAuthorizerTypedAndLeavesNothing(t *testing.T) {
	e := newOpEnv(t, true)
	n := e.node()
	e.push(t, n)
	for _, id := range []string{"wxnobody", "../../etc", strings.Repeat("x", 300)} {
		_, _, err := n.reg.Token(ctx, id)
		var aerr *credential.AuthorizerError
		if !errors.Is(err, credential.ErrUnknownAuthorizer) || !errors.As(err, &aerr) {
			t.Fatalf("%q: %v", id, err)
		}
	}
	if n.reg.Len() != 0 || e.fake.AuthorizerFetches.Load() != 0 {
		t.Fatal("an unknown authorizer left an entry or caused a fetch")
	}
}

// Rotation: the new refresh token is in the store when Token returns,
// so a fresh instance (a restart) renews with it.
func TestRotationPersistedBeforeReturn(t *testing.T) {
	e := newOpEnv(t, true)
	e.fake.RotateEvery = 1
	n := e.node()
	e.push(t, n)
	ids, _ := e.fake.AddAuthorizers(1)
	e.seed(t, n, ids)
	if _, _, err := n.reg.Token(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if e.fake.Rotations.Load() != 1 || n.obs.rotated.Load() != 1 {
		t.Fatal("no rotation")
	}
	// A new instance reads the store only.
	m := e.node()
	a, err := m.reg.Get(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Cache().Aux().Get(ctx, credential.AuxRefreshToken)
	if err != nil || string(got) != e.fake.RefreshToken(ids[0]) {
		t.Fatal("the rotated refresh token is not what the store holds")
	}
	e.clock.Advance(3 * time.Hour)
	if _, _, err := m.reg.Token(ctx, ids[0]); err != nil {
		t.Fatalf("renewal after restart: %v", err)
	}
	if e.fake.AuthorizerFetches.Load() != 2 {
		t.Fatal("fetch count")
	}
}

// The store refuses the rotated token: the access token is still served,
// the new refresh token is kept in memory, used and written next time.
func TestRotationStoreDownKeptAndWrittenLater(t *testing.T) {
	e := newOpEnv(t, true)
	e.fake.RotateEvery = 1
	n := e.node()
	e.push(t, n)
	ids, _ := e.fake.AddAuthorizers(1)
	e.seed(t, n, ids)
	a, _ := n.reg.Get(ctx, ids[0])
	// Kill the store between the source's read and its write: the fetch
	// itself runs locally once the breaker is open.
	e.store.(*memstore.Store).Kill()
	if _, err := a.Cache().Token(ctx); err != nil {
		t.Fatalf("token with the store down: %v", err)
	}
	if !a.Unsaved() {
		t.Fatal("the refused refresh token must be kept in memory")
	}
	page, _ := n.reg.Page("", 10)
	found, _, _ := n.reg.Find("", 10, "", nil)
	if len(page) != 1 || !page[0].RefreshUnsaved || len(found) != 1 || !found[0].RefreshUnsaved {
		t.Fatal("status (a page, and a search) must show the unsaved refresh token")
	}
	e.store.(*memstore.Store).Restart()
	e.clock.Advance(3 * time.Hour) // past the breaker and the token
	// No rotation this time: only the write of the kept token can clear
	// the mark (mutant: the mark cleared only when that write fails).
	e.fake.RotateEvery = 0
	if _, err := a.Cache().Token(ctx); err != nil {
		t.Fatalf("renewal: %v", err)
	}
	if a.Unsaved() {
		t.Fatal("still unsaved")
	}
	page, _ = n.reg.Page("", 10)
	found, _, _ = n.reg.Find("", 10, "", nil)
	if len(page) != 1 || page[0].RefreshUnsaved || len(found) != 1 || found[0].RefreshUnsaved {
		t.Fatal("status still shows a refresh token unsaved after it was written")
	}
	m := e.node()
	b, _ := m.reg.Get(ctx, ids[0])
	got, _ := b.Cache().Aux().Get(ctx, credential.AuxRefreshToken)
	if string(got) != e.fake.RefreshToken(ids[0]) {
		t.Fatal("the store does not hold the current refresh token")
	}
}

func Test61023RecoveredThroughAuthorizerInfo(t *testing.T) {
	e := newOpEnv(t, true)
	n := e.node()
	e.push(t, n)
	ids, _ := e.fake.AddAuthorizers(2)
	e.seed(t, n, ids)
	e.fake.Rotate(ids[0]) // the stored refresh token is now invalid
	if _, _, err := n.reg.Token(ctx, ids[0]); err != nil {
		t.Fatalf("recovery: %v", err)
	}
	if e.fake.InfoCalls.Load() != 1 || n.obs.recovered.Load() != 1 {
		t.Fatal("no recovery through api_get_authorizer_info")
	}
	a := n.reg.Lookup(ids[0])
	got, _ := a.Cache().Aux().Get(ctx, credential.AuxRefreshToken)
	if string(got) != e.fake.RefreshToken(ids[0]) || a.Unsaved() {
		t.Fatalf("recovered refresh token not stored, or marked unsaved (%v)", a.Unsaved())
	}

	// When WeChat does not give it: a clear 61023, no loop.
	e.fake.InfoGivesRefresh = false
	e.fake.Rotate(ids[1])
	_, _, err := n.reg.Token(ctx, ids[1])
	var ae *credential.APIError
	if !errors.As(err, &ae) || ae.Code != 61023 || !strings.Contains(err.Error(), "refresh_token invalid") {
		t.Fatalf("unrecovered 61023: %v", err)
	}
	if n.obs.notRecovered.Load() != 1 || e.fake.InfoCalls.Load() != 2 {
		t.Fatal("counts")
	}
	if _, _, err := n.reg.Token(ctx, ids[1]); !errors.As(err, new(*credential.BackoffError)) {
		t.Fatalf("the next request must meet the backoff, not WeChat: %v", err)
	}
}

func Test61003RevokedIsForgotten(t *testing.T) {
	e := newOpEnv(t, true)
	n := e.node()
	e.push(t, n)
	ids, _ := e.fake.AddAuthorizers(1)
	e.seed(t, n, ids)
	e.fake.Revoke(ids[0])
	_, _, err := n.reg.Token(ctx, ids[0])
	if !errors.Is(err, credential.ErrAuthorizerRevoked) {
		t.Fatalf("61003: %v", err)
	}
	if n.reg.Len() != 0 || n.obs.forgotten.Load() != 1 {
		t.Fatal("a revoked authorizer must be forgotten")
	}
	if e.logs.FilterMessageSnippet("revoked the platform (61003)").FilterField(zap.String("authorizer", ids[0])).Len() != 1 {
		t.Fatal("the revocation is not in the platform's log")
	}
	m := e.node() // durable: a peer or a restart does not bring it back
	if _, err := m.reg.Get(ctx, ids[0]); !errors.Is(err, credential.ErrUnknownAuthorizer) {
		t.Fatalf("after revocation: %v", err)
	}
}

func TestUnauthorizedEventForgets(t *testing.T) {
	e := newOpEnv(t, true)
	a, b := e.node(), e.node()
	e.push(t, a)
	e.authorize(t, a, "wxmerchant000002")
	if _, _, err := b.reg.Token(ctx, "wxmerchant000002"); err != nil {
		t.Fatal(err)
	}
	if err := a.reg.Forget(ctx, "wxmerchant000002", "unauthorized"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.reg.Get(ctx, "wxmerchant000002"); !errors.Is(err, credential.ErrUnknownAuthorizer) {
		t.Fatalf("forgotten: %v", err)
	}
	// b still holds a cache; it drops it on the next renewal.
	e.fake.Revoke("wxmerchant000002")
	e.clock.Advance(3 * time.Hour)
	if _, _, err := b.reg.Token(ctx, "wxmerchant000002"); !errors.Is(err, credential.ErrUnknownAuthorizer) {
		t.Fatalf("peer after forget: %v", err)
	}
	if b.reg.Len() != 0 {
		t.Fatal("peer kept the entry")
	}
}

// A component-token 40001 during api_authorizer_token is replayed with a
// fresh component token: another system fetched one (no shared store),
// which ends ours 5 minutes later.
func TestAuthorizerFetchReplaysComponentReject(t *testing.T) {
	e := newOpEnv(t, false)
	n, other := e.node(), e.node()
	e.push(t, n)
	e.push(t, other)
	ids, _ := e.fake.AddAuthorizers(1)
	e.seed(t, n, ids)
	old, _ := n.comp.Token(ctx)
	if _, err := other.comp.Token(ctx); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(6 * time.Minute)
	if e.fake.Valid(old.Value) {
		t.Fatal("setup: the old component token should be dead")
	}
	if _, _, err := n.reg.Token(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.ComponentFetches.Load(); got != 3 {
		t.Fatalf("component fetches = %d, want 3", got)
	}
}

// Nothing secret in logs, errors or the status page.
func TestOpenPlatformNoSecretsAnywhere(t *testing.T) {
	e := newOpEnv(t, true)
	e.fake.RotateEvery = 1
	n := e.node()
	ticket := e.fake.PushTicket()
	_ = n.comp.Aux().Put(ctx, credential.AuxVerifyTicket, []byte(ticket))
	e.authorize(t, n, "wxmerchant000003")
	ids, _ := e.fake.AddAuthorizers(3)
	e.seed(t, n, ids)
	var secrets []string
	var errs []string
	for _, id := range ids {
		secrets = append(secrets, e.fake.RefreshToken(id))
		tok, _, err := n.reg.Token(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, tok.Value, e.fake.RefreshToken(id))
	}
	e.fake.Rotate(ids[0])
	e.fake.InfoGivesRefresh = false
	e.fake.Revoke(ids[1])
	e.clock.Advance(3 * time.Hour)
	for _, id := range ids {
		if _, _, err := n.reg.Token(ctx, id); err != nil {
			errs = append(errs, err.Error(), credential.ClientText(err))
		}
	}
	ctok, _ := n.comp.Token(ctx)
	secrets = append(secrets, ctok.Value, ticket, compSecret)
	page, _ := n.reg.Page("", 100)
	js, _ := json.Marshal(page)
	hay := string(js) + strings.Join(errs, "\n")
	for _, l := range e.logs.All() {
		hay += l.Message
		for k, v := range l.ContextMap() {
			hay += k + "=" + toString(v)
		}
	}
	if len(errs) < 2 || e.logs.Len() == 0 {
		t.Fatal("the attack produced no errors or logs to check")
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(hay, s) {
			t.Fatalf("a credential leaked: %.12s…", s)
		}
	}
	for _, frag := range []string{"refreshtoken@@@", "authorizertoken@@@", "componenttoken@@@", "TICKET@@@"} {
		if strings.Contains(hay, frag) {
			t.Fatalf("a credential fragment %q leaked", frag)
		}
	}
}

func toString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
