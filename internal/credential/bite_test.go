package credential_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
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
	"go.uber.org/zap/zaptest/observer"
)

// Tests for the mutants of issue 14: each fails on the one-line mutant
// named in its comment.

// Compare-and-invalidate, without a race: a request that saw an old
// token fail must not drop the new one (mutant: Invalidate drops
// whatever is cached).
func TestInvalidateOldKeepsNew(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, nil)
	ctx := context.Background()
	old, _ := e.cache.Token(ctx)
	if !e.cache.Invalidate(old) {
		t.Fatal("Invalidate of the current token failed")
	}
	fresh, _ := e.cache.Token(ctx)
	if fresh.Value == old.Value {
		t.Fatal("no new token")
	}
	if e.cache.Invalidate(old) {
		t.Fatal("Invalidate of an old token succeeded")
	}
	if cur := e.cache.Current(); cur != fresh {
		t.Fatalf("the new token was dropped by an old token's Invalidate")
	}
	if e.cache.Invalidate(nil) || e.cache.Current() != fresh {
		t.Fatal("Invalidate(nil) dropped the token")
	}
	if n := e.fake.Fetches.Load(); n != 2 {
		t.Fatalf("%d fetches; want 2", n)
	}
}

// Old over new: publishing a token fetched earlier than the cached one
// changes nothing (mutant: publish's newer-wins guard disabled).
func TestPublishOlderKeepsNewer(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, nil)
	now := e.clock.Now()
	newer := credential.NewToken("newer", 7200, now, "fetch")
	older := credential.NewToken("older", 7200, now.Add(-time.Minute), "store")
	e.cache.Publish(newer)
	e.cache.Publish(older)
	if cur := e.cache.Current(); cur != newer {
		t.Fatalf("an older token replaced a newer one: %q", cur.Value)
	}
	if r := e.cache.Recent(); len(r) != 1 || r[0] != "newer" {
		t.Fatalf("Recent = %v", r)
	}
	// The same age is not older: the later publish wins.
	same := credential.NewToken("same", 7200, now, "fetch")
	e.cache.Publish(same)
	if e.cache.Current() != same {
		t.Fatal("a token as new as the cached one was refused")
	}
}

// Warm goes through publish too: a stored token older than the cached
// one is not adopted.
func TestWarmOlderStoredTokenIgnored(t *testing.T) {
	e := newEnv(t, credential.APIClassic, true, nil)
	ctx := context.Background()
	e.shared.Store(ctx, "access_token", credential.NewToken("stored", 7200, e.clock.Now().Add(-time.Minute), "store"))
	e.cache.Publish(credential.NewToken("mine", 7200, e.clock.Now(), "fetch"))
	if !e.cache.Warm(ctx) {
		t.Fatal("Warm found no usable stored token")
	}
	if cur := e.cache.Current(); cur.Value != "mine" {
		t.Fatalf("Warm replaced a newer token with an older one: %q", cur.Value)
	}
}

// tokenServer answers the classic token endpoint with body, and counts.
func tokenServer(t *testing.T, body string) (*url.URL, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u, &n
}

// A missing or non-positive expires_in gives the documented 5 minutes,
// not WeChat's usual 7200 s.
func TestMissingExpiresInFiveMinutes(t *testing.T) {
	for _, body := range []string{
		`{"access_token":"T1"}`,
		`{"access_token":"T1","expires_in":0}`,
		`{"access_token":"T1","expires_in":-7}`,
	} {
		base, _ := tokenServer(t, body)
		src := &credential.AccessTokenSource{RT: http.DefaultTransport, Bases: []*url.URL{base}, AppID: "wx", Secret: "s", API: credential.APIClassic}
		tok, err := src.Fetch(context.Background(), credential.FetchOptions{})
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if ttl := tok.ExpiresAt.Sub(tok.FetchedAt); ttl != 5*time.Minute {
			t.Fatalf("%s: TTL %v; want 5m", body, ttl)
		}
	}
}

// An errcode from the first token endpoint is WeChat's answer about the
// account: the fetch stops there (mutant: fail over on an errcode). A
// dead endpoint does fail over.
func TestNoFailoverOnErrcode(t *testing.T) {
	first, n1 := tokenServer(t, `{"errcode":40164,"errmsg":"invalid ip"}`)
	second, n2 := tokenServer(t, `{"access_token":"T2","expires_in":7200}`)
	src := &credential.AccessTokenSource{RT: http.DefaultTransport, Bases: []*url.URL{first, second}, AppID: "wx", Secret: "s", API: credential.APIClassic}
	_, err := src.Fetch(context.Background(), credential.FetchOptions{})
	var ae *credential.APIError
	if !asAPIError(err, &ae) || ae.Code != 40164 {
		t.Fatalf("want errcode 40164, got %v", err)
	}
	if n1.Load() != 1 || n2.Load() != 0 {
		t.Fatalf("endpoints called %d and %d times; want 1 and 0", n1.Load(), n2.Load())
	}
	dead, _ := url.Parse("http://127.0.0.1:1")
	src.Bases = []*url.URL{dead, second}
	if tok, err := src.Fetch(context.Background(), credential.FetchOptions{}); err != nil || tok.Value != "T2" {
		t.Fatalf("no failover from a dead endpoint: %v", err)
	}
}

func asAPIError(err error, target **credential.APIError) bool { return errors.As(err, target) }

// Config defaults: zero takes the default, a set value is kept.
func TestConfigDefaults(t *testing.T) {
	c := credential.New(credential.Config{})
	defer c.Close()
	if c.FetchTimeout() != credential.DefaultFetchTimeout || c.Name() != "access_token" {
		t.Fatalf("defaults: %v %q", c.FetchTimeout(), c.Name())
	}
	c2 := credential.New(credential.Config{FetchTimeout: time.Second, Name: "ticket:jsapi"})
	defer c2.Close()
	if c2.FetchTimeout() != time.Second || c2.Name() != "ticket:jsapi" {
		t.Fatalf("set values: %v %q", c2.FetchTimeout(), c2.Name())
	}
}

// MinAge is a strict bound: a token exactly MinAge old is no longer
// young, so the evidence is weighed (probed) and the token replaced.
func TestRejectedAtExactlyMinAge(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, nil)
	ctx := context.Background()
	tok, _ := e.cache.Token(ctx)
	e.fake.Revoke(tok.Value)
	e.clock.Advance(credential.DefaultMinAge)
	fresh, replay, err := e.cache.Rejected(ctx, tok)
	if err != nil || !replay || fresh.Value == tok.Value || e.fake.Probes.Load() != 1 {
		t.Fatalf("a token MinAge old was kept: replay %v, %d probes, err %v", replay, e.fake.Probes.Load(), err)
	}
}

// A waiter outlasts a dead peer's lease and takes over, however short the
// fetch timeout (mutants: the load deadline without the lease's margin).
// Ordering, not time: the store's clock moves only after the waiter has
// polled for longer than a fetch timeout.
func TestWaiterOutlastsDeadLease(t *testing.T) {
	overlapIfFast(t)
	clock := storetest.NewClock()
	store := memstore.New()
	store.Now = clock.Now
	seal, _ := credential.NewSealer(testSecret, "wxunit")
	sh := credential.NewShared(store.Open(), seal, credential.SharedOptions{Now: clock.Now})
	fake := storetest.NewFake(clock, credential.APIClassic)
	const ft = 20 * time.Millisecond
	c := credential.New(credential.Config{Source: fake, Now: clock.Now, Shared: sh, FetchTimeout: ft})
	defer c.Close()
	ctx := context.Background()
	if won, err := store.Open().Add(ctx, sh.Key("access_token")+":lease", sh.SealClaim(sh.Key("access_token")+":lease", clock.Now().Add(ft+2*time.Second)), ft+2*time.Second); !won || err != nil {
		t.Fatal("planting the peer's lease failed")
	}
	done := make(chan error, 1)
	go func() { _, err := c.Token(ctx); done <- err }()
	// Each poll waits at least 25 ms: 8 polls outlast the fetch timeout.
	for start := store.Ops(); store.Ops() < start+16; {
		select {
		case err := <-done:
			t.Fatalf("the waiter gave up before the lease expired: %v", err)
		default:
			time.Sleep(5 * time.Millisecond)
		}
	}
	clock.Advance(ft + 2*time.Second)
	if err := <-done; err != nil {
		t.Fatalf("no take-over after the dead peer's lease expired: %v", err)
	}
	if fake.Fetches.Load() != 1 {
		t.Fatalf("%d fetches", fake.Fetches.Load())
	}
}

// The cluster conformance suite over the in-memory store, here too, so
// that a mutation run of this package exercises the cluster protocol
// (stampede, newer-wins, a lease holder dying, store down) without a
// server. The real stores run it in their own packages.
func TestMemstoreConformance(t *testing.T) {
	overlapIfFast(t)
	s := memstore.New()
	storetest.Run(t, storetest.Harness{
		Open:    func(*testing.T) credential.Backend { return s.Open() },
		Pause:   func(*testing.T) { s.Pause() },
		Resume:  func(*testing.T) { s.Resume() },
		Kill:    func(*testing.T) { s.Kill() },
		Restart: func(*testing.T) { s.Restart() },
		Durable: true,
	})
}

// force_refresh comes on the second failed probe of a stuck token, which
// the 30 s verdict TTL places exactly 30 s after the first (no minimum
// age here): the spacing bounds are inclusive (mutants: > for >=).
func TestForceRefreshAtExactSpacing(t *testing.T) {
	e := newEnv(t, credential.APIStable, false, func(c *credential.Config) { c.MinAge = -1 })
	tok, _ := e.cache.Token(context.Background())
	e.clock.Advance(5 * time.Minute)
	e.fake.Break(tok.Value)
	start := e.clock.Now()
	for range 300 {
		e.clock.Advance(time.Second)
		if e.call(t, false) == 0 {
			break
		}
	}
	if d := e.clock.Now().Sub(start); d != forceAfter {
		t.Fatalf("recovered %v after the token broke; want %v", d, forceAfter)
	}
	if e.fake.Forced.Load() != 1 || e.fake.Probes.Load() != 2 {
		t.Fatalf("%d force_refresh, %d probes; want 1 and 2", e.fake.Forced.Load(), e.fake.Probes.Load())
	}
}

const forceAfter = 31 * time.Second // the first probe 1 s in, the second 30 s later

// The force_refresh quota is 20 a day: the 20th is allowed, the 21st
// refused (mutant: >= for >).
func TestForceQuotaIsTwenty(t *testing.T) {
	e := newEnv(t, credential.APIStable, false, nil)
	ctx := context.Background()
	for i := range 20 {
		if err := e.cache.SpendForce(ctx); err != nil {
			t.Fatalf("force_refresh %d refused: %v", i+1, err)
		}
	}
	if err := e.cache.SpendForce(ctx); err == nil {
		t.Fatal("the 21st force_refresh of the day was allowed")
	}
}

// The fetch log states expires_in in seconds.
func TestFetchLogExpiresIn(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	e := newEnv(t, credential.APIClassic, false, func(c *credential.Config) { c.Logger = zap.New(core) })
	if _, err := e.cache.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	l := logs.FilterMessageSnippet("fetched").All()
	if len(l) != 1 || l[0].ContextMap()["expires_in"] != int64(7200) {
		t.Fatalf("fetch log: %+v", l)
	}
}

// Publishing the cached token again does not list it twice in Recent.
func TestRecentNoDuplicate(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, nil)
	tok := credential.NewToken("one", 7200, e.clock.Now(), "fetch")
	e.cache.Publish(tok)
	e.cache.Publish(tok)
	if r := e.cache.Recent(); len(r) != 1 {
		t.Fatalf("Recent = %v", r)
	}
}

// A short-lived token renews at half its life at the latest, even when
// the window would pick an earlier point than that.
func TestRenewAtMostHalfLife(t *testing.T) {
	e := newEnv(t, credential.APIStable, false, func(c *credential.Config) { c.Rand = func() float64 { return 0.99 } })
	tok := credential.NewToken("short", 0, e.clock.Now(), "fetch") // 5 min
	e.cache.Publish(tok)
	if got, want := tok.ExpiresAt.Sub(e.cache.RenewAt()), credential.FallbackTTL/2; got != want {
		t.Fatalf("renews %v before expiry; want %v", got, want)
	}
}

type failSource struct{}

func (failSource) Fetch(context.Context, credential.FetchOptions) (*credential.Token, error) {
	return nil, errors.New("down")
}

// The scheduler's next call: the renewal time; after a failed renewal,
// the end of the backoff; with a store, a peek at least once a minute.
func TestNextSchedule(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, nil)
	ctx := context.Background()
	e.cache.Token(ctx)
	if e.cache.Next() != e.cache.RenewAt() {
		t.Fatalf("next %v; want the renewal time %v (no store: no peek)", e.cache.Next(), e.cache.RenewAt())
	}
	e.clock.Advance(e.cache.RenewAt().Sub(e.clock.Now()) + time.Second)
	e.cache.SetSource(failSource{})
	if _, err := e.cache.Refresh(ctx); err == nil {
		t.Fatal("refresh did not fail")
	}
	if want := e.clock.Now().Add(5 * time.Second); !e.cache.Next().Equal(want) {
		t.Fatalf("next %v after a failed renewal; want the end of the backoff %v", e.cache.Next(), want)
	}
	s := newEnv(t, credential.APIClassic, true, nil)
	s.cache.Token(ctx)
	if want := s.clock.Now().Add(time.Minute); !s.cache.Next().Equal(want) {
		t.Fatalf("next %v with a store; want a peek at %v", s.cache.Next(), want)
	}
}

// ttlRecorder remembers the TTL of every Add, to read a lease's lifetime.
type ttlRecorder struct {
	credential.Backend
	mu   sync.Mutex
	ttls map[string]time.Duration
}

func (r *ttlRecorder) Add(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	r.mu.Lock()
	r.ttls[key] = ttl
	r.mu.Unlock()
	return r.Backend.Add(ctx, key, v, ttl)
}

// The fetch lease outlasts the fetch it guards: a peer must not start a
// second fetch (and, on the classic endpoint, kill the first token) while
// the holder's may still succeed (mutant: FetchTimeout-leaseMargin).
func TestLeaseOutlastsFetch(t *testing.T) {
	clock := storetest.NewClock()
	rec := &ttlRecorder{Backend: memstore.New().Open(), ttls: map[string]time.Duration{}}
	seal, _ := credential.NewSealer(testSecret, "wxunit")
	sh := credential.NewShared(rec, seal, credential.SharedOptions{Now: clock.Now})
	const ft = 10 * time.Second
	c := credential.New(credential.Config{Source: storetest.NewFake(clock, credential.APIClassic), Shared: sh, Now: clock.Now, FetchTimeout: ft})
	defer c.Close()
	if _, err := c.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	ttl, ok := rec.ttls[sh.Key("access_token")+":lease"]
	rec.mu.Unlock()
	if !ok || ttl <= ft {
		t.Fatalf("lease TTL %v (taken %v); want more than the fetch timeout %v", ttl, ok, ft)
	}
}

// A second force_refresh is allowed exactly 30 s after the first: the
// spacing from the last force is inclusive too (mutant: > for >=). The
// forced token breaks at once; its first failed probe is at that instant,
// its second 30 s later, and that is when the next force comes.
func TestSecondForceAtExactSpacing(t *testing.T) {
	e := newEnv(t, credential.APIStable, false, func(c *credential.Config) { c.MinAge = -1 })
	tok, _ := e.cache.Token(context.Background())
	e.clock.Advance(5 * time.Minute)
	e.fake.Break(tok.Value)
	for range 300 {
		e.clock.Advance(time.Second)
		if e.call(t, false) == 0 {
			break
		}
	}
	if e.fake.Forced.Load() != 1 {
		t.Fatalf("%d force_refresh after the first break; want 1", e.fake.Forced.Load())
	}
	e.fake.Break(e.cache.Current().Value)
	start := e.clock.Now()
	for i := range 300 {
		if i > 0 {
			e.clock.Advance(time.Second)
		}
		if e.call(t, false) == 0 {
			break
		}
	}
	if d := e.clock.Now().Sub(start); d != 30*time.Second || e.fake.Forced.Load() != 2 {
		t.Fatalf("second recovery %v after the first force, %d force_refresh; want 30s and 2", d, e.fake.Forced.Load())
	}
}

// The token this instance saw rejected stays rejected after a new one is
// published: a peer's later copy of it in the store is not adopted
// (mutant: publish forgets the rejected value when another is published).
func TestPeerCopyOfRejectedTokenIgnored(t *testing.T) {
	clock := storetest.NewClock()
	fake := storetest.NewFake(clock, credential.APIStable)
	store := memstore.New()
	store.Now = clock.Now
	seal, _ := credential.NewSealer(testSecret, "wxunit")
	peer := credential.NewShared(store.Open(), seal, credential.SharedOptions{Now: clock.Now})
	sh := credential.NewShared(store.Open(), seal, credential.SharedOptions{Now: clock.Now})
	c := credential.New(credential.Config{Source: fake, Shared: sh, Now: clock.Now})
	defer c.Close()
	ctx := context.Background()
	x, _ := c.Token(ctx)
	fake.Revoke(x.Value)
	if !c.Invalidate(x) {
		t.Fatal("Invalidate failed")
	}
	y, err := c.Token(ctx)
	if err != nil || y.Value == x.Value {
		t.Fatalf("no new token: %v", err)
	}
	clock.Advance(time.Minute)
	peer.Store(ctx, "access_token", credential.NewToken(x.Value, 7200, clock.Now(), "fetch"))
	c.Tick()
	if got := c.Current().Value; got != y.Value {
		t.Fatal("the peek adopted a peer's copy of the token this instance saw rejected")
	}
}

// An unconfirmed replacement is kept only while strictly younger than
// MinAge: exactly MinAge old, its rejection is weighed and it is replaced
// (mutant: <= for <).
func TestRejectedReplacementAtExactlyMinAge(t *testing.T) {
	e, fresh := replacedOnce(t)
	ctx := context.Background()
	e.fake.Revoke(fresh.Value)
	e.clock.Advance(fresh.FetchedAt.Add(credential.DefaultMinAge).Sub(e.clock.Now()))
	third, replay, err := e.cache.Rejected(ctx, fresh)
	if err != nil || !replay || third.Value == fresh.Value {
		t.Fatalf("a replacement exactly MinAge old was kept: replay %v, %v", replay, err)
	}
}

// A request whose token was dropped meanwhile (another request's
// rejection) replays with the fresh token (mutant: replay only when the
// fresh token is the rejected one).
func TestRejectedAfterDropReplaysFresh(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, nil)
	ctx := context.Background()
	tok, _ := e.cache.Token(ctx)
	if !e.cache.Invalidate(tok) {
		t.Fatal("Invalidate failed")
	}
	fresh, replay, err := e.cache.Rejected(ctx, tok)
	if err != nil || !replay || fresh.Value == tok.Value {
		t.Fatalf("after a drop: replay %v with a new token %v, %v", replay, fresh != nil && fresh.Value != tok.Value, err)
	}
}

// The status says the ceiling is reached as soon as the day's fetches
// equal it, when the next one would be refused (mutant: > for >=).
func TestCeilingReachedAtExactlyCeiling(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, func(c *credential.Config) { c.Ceiling, c.MinAge = 2, -1 })
	ctx := context.Background()
	tok, _ := e.cache.Token(ctx)
	if e.cache.Status().CeilingReached {
		t.Fatal("ceiling reached after 1 of 2 fetches")
	}
	e.cache.Invalidate(tok)
	if _, err := e.cache.Token(ctx); err != nil {
		t.Fatal(err)
	}
	if e.fake.Fetches.Load() != 2 || !e.cache.Status().CeilingReached {
		t.Fatalf("%d fetches, ceiling reached %v; want 2 and true", e.fake.Fetches.Load(), e.cache.Status().CeilingReached)
	}
}

// An auxiliary value put twice reads back as the second (mutant: Put
// appends a duplicate and Get keeps finding the first).
func TestAuxPutReplaces(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, nil)
	ctx := context.Background()
	aux := e.cache.Aux()
	for _, v := range []string{"one", "two"} {
		if err := aux.Put(ctx, "ticket", []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := aux.Get(ctx, "ticket"); err != nil || string(v) != "two" {
		t.Fatalf("Get = %q, %v; want two", v, err)
	}
}

// An empty stored ticket (a store's forgotten value) is no ticket: the
// component token is not even asked for (mutant: only a store error with
// an empty value counts as none).
func TestEmptyTicketIsNoTicket(t *testing.T) {
	e := newOpEnv(t, false)
	n := e.node()
	if err := n.comp.Aux().Put(ctx, credential.AuxVerifyTicket, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := n.comp.Token(ctx); !errors.Is(err, credential.ErrNoTicket) {
		t.Fatalf("empty ticket: %v; want ErrNoTicket", err)
	}
	if f := e.fake.ComponentFetches.Load(); f != 0 {
		t.Fatalf("%d api_component_token calls with an empty ticket", f)
	}
}

// mapAux is an Aux in a map, for calling a source directly.
type mapAux map[string][]byte

func (m mapAux) Get(_ context.Context, name string) ([]byte, error) {
	if v, ok := m[name]; ok {
		return v, nil
	}
	return nil, credential.ErrNotFound
}

func (m mapAux) Put(_ context.Context, name string, v []byte) error { m[name] = v; return nil }

// api_component_token errors that echo the request (secret and ticket,
// raw and escaped) reach callers redacted (mutant: redactAll returns the
// message as it is).
func TestComponentErrorsRedacted(t *testing.T) {
	const secret, ticket = "CoMpSeCrEt+/=&x", "ticket@+/=value"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		_ = json.NewDecoder(r.Body).Decode(&in)
		msg := in["component_appsecret"] + " " + url.QueryEscape(in["component_appsecret"]) + " " + in["component_verify_ticket"] + " " + url.QueryEscape(in["component_verify_ticket"])
		out, _ := json.Marshal(map[string]any{"errcode": 61004, "errmsg": "echo " + msg + " rid: r1"})
		w.Write(out)
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	src := &credential.ComponentTokenSource{RT: http.DefaultTransport, Bases: []*url.URL{base}, AppID: "wxcomp", Secret: secret}
	_, err := src.Fetch(context.Background(), credential.FetchOptions{Aux: mapAux{credential.AuxVerifyTicket: []byte(ticket)}})
	if err == nil {
		t.Fatal("no error")
	}
	for _, s := range []string{secret, url.QueryEscape(secret), ticket, url.QueryEscape(ticket)} {
		if strings.Contains(err.Error(), s) {
			t.Fatalf("the error holds %q: %v", s, err)
		}
	}
	if !strings.Contains(err.Error(), "[secret]") || !strings.Contains(err.Error(), "[ticket]") {
		t.Fatalf("no redaction marks: %v", err)
	}
}

// With nothing due, the scheduler sleeps: its clock is read a handful of
// times, not spun on (mutant: the wait skipped when there is time left).
func TestSchedulerSleepsUntilDue(t *testing.T) {
	clock := storetest.NewClock()
	var reads atomic.Int64
	s := credential.NewScheduler(func() time.Time { reads.Add(1); return clock.Now() })
	c := credential.New(credential.Config{Source: storetest.NewFake(clock, credential.APIClassic), Now: clock.Now, Scheduler: s})
	defer c.Close()
	if _, err := c.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the renewal is hours away
	if n := reads.Load(); n > 100 {
		t.Fatalf("the scheduler read its clock %d times with nothing due", n)
	}
}

// An empty value (how a forgotten authorizer is stored) seals and opens
// like any other: exactly the envelope's size is not too short (mutant:
// <= for <).
func TestSealEmptyValueOpens(t *testing.T) {
	s, err := credential.NewSealer(testSecret, "wxunit")
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Open("k", s.Seal("k", nil))
	if err != nil || len(got) != 0 {
		t.Fatalf("Open(Seal(empty)) = %q, %v", got, err)
	}
}

// A stored value cut short anywhere is refused, never a panic (mutant:
// the length check loses the nonce's size), and a sealed token with no
// value is no token (mutant: < for <=).
func TestSealShortValuesRefused(t *testing.T) {
	s, err := credential.NewSealer(testSecret, "wxunit")
	if err != nil {
		t.Fatal(err)
	}
	sealed := s.Seal("k", nil)
	for n := 0; n < len(sealed); n++ {
		if _, err := s.Open("k", sealed[:n]); err == nil {
			t.Fatalf("a %d-byte cut of a sealed value opened", n)
		}
	}
	now := time.Now()
	empty := s.SealToken("k", &credential.Token{FetchedAt: now, ExpiresAt: now.Add(time.Hour)})
	if tok, err := s.OpenToken("k", empty, now); err == nil {
		t.Fatalf("a sealed token without a value opened: %+v", tok)
	}
}
