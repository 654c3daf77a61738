package credential_test

import (
	"context"
	"errors"
	"runtime"
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

const testSecret = "unit-secret-0123456789"

type env struct {
	clock  *storetest.Clock
	fake   *storetest.Fake
	cache  *credential.Cache
	shared *credential.Shared
	obs    *countObs
}

type countObs struct {
	fetches, forced, ceiling, storeErrors atomic.Int64
}

func (o *countObs) Fetched(_ string, force bool, err error) {
	if force {
		o.forced.Add(1)
	} else {
		o.fetches.Add(1)
	}
}
func (o *countObs) StoreError(string)     { o.storeErrors.Add(1) }
func (o *countObs) CeilingReached(string) { o.ceiling.Add(1) }

// newEnv builds a cache on a fake WeChat and clock; with shared, over a
// memstore.
func newEnv(t *testing.T, api string, shared bool, tweak func(*credential.Config)) *env {
	e := &env{clock: storetest.NewClock(), obs: &countObs{}}
	e.fake = storetest.NewFake(e.clock, api)
	cfg := credential.Config{Source: e.fake, Now: e.clock.Now, Observer: e.obs, FetchTimeout: time.Second, Sleep: e.clock.Sleep}
	if shared {
		seal, err := credential.NewSealer(testSecret, "wxunit")
		if err != nil {
			t.Fatal(err)
		}
		e.shared = credential.NewShared(memstore.New().Open(), seal, credential.SharedOptions{Now: e.clock.Now})
		cfg.Shared = e.shared
	}
	if tweak != nil {
		tweak(&cfg)
	}
	e.cache = credential.New(cfg)
	t.Cleanup(func() { e.cache.Close() })
	return e
}

// The API paths env.call uses: a normal one, and one that answers 40001
// whatever the token.
const (
	apiPath         = "/cgi-bin/message/custom/send"
	always40001Path = "/cgi-bin/test/always_40001"
)

// call is what RoundTrip does: a call with the token, and on a token
// errcode, RejectedOn and at most one replay; a call that WeChat does not
// answer with a token errcode confirms its token. always40001 is an API
// that rejects any token.
func (e *env) call(t *testing.T, always40001 bool) int {
	t.Helper()
	path := apiPath
	if always40001 {
		path = always40001Path
	}
	return e.callPath(t, path, always40001)
}

// callPath is call for an API path of the caller's choosing.
func (e *env) callPath(t *testing.T, path string, always40001 bool) int {
	t.Helper()
	ctx := context.Background()
	tok, err := e.cache.Token(ctx)
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	answer := func(tok *credential.Token) int {
		if always40001 {
			return 40001
		}
		return e.fake.Call(tok.Value)
	}
	code := answer(tok)
	if !credential.IsTokenErrcode(code) {
		e.cache.Confirm(tok)
		return code
	}
	fresh, replay, err := e.cache.RejectedOn(ctx, tok, path)
	if err != nil {
		t.Fatalf("Rejected: %v", err)
	}
	if !replay {
		return code
	}
	code = answer(fresh)
	if !credential.IsTokenErrcode(code) {
		e.cache.Confirm(fresh)
	}
	return code
}

func TestTokenWarmNoAlloc(t *testing.T) {
	e := newEnv(t, credential.APIStable, false, nil)
	ctx := context.Background()
	if _, err := e.cache.Token(ctx); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() { _, _ = e.cache.Token(ctx) }); n != 0 {
		t.Fatalf("warm Token allocates %v times; want 0", n)
	}
}

// The always-40001 figures of issue 10 §2, and a glitch, on a fake clock.
func TestAlways40001Budget(t *testing.T) {
	for _, api := range []string{credential.APIStable, credential.APIClassic} {
		for _, shared := range []bool{false, true} {
			name := api
			if shared {
				name += "/shared"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, api, shared, nil)
				for i := range 1000 {
					e.clock.Advance(600 * time.Millisecond)
					if code := e.call(t, true); code != 40001 {
						t.Fatalf("the 40001 API answered %d", code)
					}
					if code := e.call(t, false); code != 0 {
						t.Fatalf("call %d of another API failed with %d", i, code)
					}
				}
				if f, fr := e.fake.Fetches.Load(), e.fake.Forced.Load(); f > 3 || fr > 1 {
					t.Fatalf("1000 calls of a 40001 API: %d fetches, %d force_refresh; want ≤ 3, ≤ 1", f, fr)
				}
			})
		}
	}
}

func TestGlitchRecovery(t *testing.T) {
	for _, api := range []string{credential.APIStable, credential.APIClassic} {
		for _, shared := range []bool{false, true} {
			name := api
			if shared {
				name += "/shared"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, api, shared, nil)
				e.call(t, false)
				e.clock.Advance(10 * time.Minute)
				e.fake.Glitch.Store(true)
				for range 100 {
					e.clock.Advance(100 * time.Millisecond)
					e.call(t, false)
				}
				e.fake.Glitch.Store(false)
				e.clock.Advance(100 * time.Millisecond)
				if code := e.call(t, false); code != 0 {
					t.Fatalf("first request after the glitch answered %d", code)
				}
				if f := e.fake.Fetches.Load(); f > 3 || e.fake.Forced.Load() > 0 {
					t.Fatalf("a 10 s glitch cost %d fetches, %d force_refresh", f, e.fake.Forced.Load())
				}
			})
		}
	}
}

// A token that WeChat rejects while its endpoint keeps handing it back:
// accepted, no replay, and force_refresh only after two failed probes
// 30 s apart.
func TestForceRefreshOnlyOnRepeatedEvidence(t *testing.T) {
	e := newEnv(t, credential.APIStable, false, nil)
	tok, _ := e.cache.Token(context.Background())
	e.clock.Advance(5 * time.Minute)
	e.fake.Break(tok.Value)
	var ok bool
	for range 300 {
		e.clock.Advance(time.Second)
		if e.call(t, false) == 0 {
			ok = true
			break
		}
	}
	if !ok {
		t.Fatal("never recovered from a stuck token")
	}
	if f := e.fake.Forced.Load(); f != 1 {
		t.Fatalf("%d force_refresh; want 1", f)
	}
	if f := e.fake.Fetches.Load(); f > 4 {
		t.Fatalf("%d fetches; want ≤ 4", f)
	}
}

func TestRejectedNotCurrentReplaysWithoutFetch(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, func(c *credential.Config) { c.MinAge = -1 })
	ctx := context.Background()
	old, _ := e.cache.Token(ctx)
	e.fake.Revoke(old.Value)
	fresh, replay, err := e.cache.Rejected(ctx, old)
	if err != nil || !replay || fresh.Value == old.Value {
		t.Fatalf("Rejected(bad current) = %v, %v", replay, err)
	}
	again, replay, err := e.cache.Rejected(ctx, old)
	if err != nil || !replay || again != fresh || e.fake.Fetches.Load() != 2 {
		t.Fatalf("a stale rejection fetched (%d fetches) or did not replay", e.fake.Fetches.Load())
	}
}

// A token fetched normally is probed however young: a real revocation
// (a secret reset, another system's force_refresh) is repaired on the
// first request that meets it.
func TestRejectedYoungTokenRevokedIsReplaced(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, nil)
	ctx := context.Background()
	tok, _ := e.cache.Token(ctx)
	e.fake.Revoke(tok.Value)
	e.clock.Advance(5 * time.Second)
	fresh, replay, err := e.cache.Rejected(ctx, tok)
	if err != nil || !replay || fresh.Value == tok.Value || e.fake.Probes.Load() != 1 || e.fake.Fetches.Load() != 2 {
		t.Fatalf("a revoked young token: replay %v, %d probes, %d fetches, %v; want a replay after 1 probe and 1 fetch",
			replay, e.fake.Probes.Load(), e.fake.Fetches.Load(), err)
	}
}

// A token fetched to replace a rejected one that fails too while younger
// than MinAge is kept, with no probe and no fetch: WeChat is rejecting
// every token, and fetching again would only burn the quota.
func TestRejectedYoungReplacementKept(t *testing.T) {
	e, fresh := replacedOnce(t)
	ctx := context.Background()
	probes, fetches := e.fake.Probes.Load(), e.fake.Fetches.Load()
	e.fake.Revoke(fresh.Value)
	e.clock.Advance(10 * time.Second)
	if _, replay, _ := e.cache.Rejected(ctx, fresh); replay || e.fake.Probes.Load() != probes || e.fake.Fetches.Load() != fetches {
		t.Fatalf("a young replacement was probed or replaced (%d → %d probes, %d → %d fetches)",
			probes, e.fake.Probes.Load(), fetches, e.fake.Fetches.Load())
	}
	e.clock.Advance(time.Minute) // past MinAge: probed and replaced again
	if _, replay, _ := e.cache.Rejected(ctx, fresh); !replay || e.fake.Fetches.Load() != fetches+1 {
		t.Fatalf("an old replacement was not replaced (%d fetches)", e.fake.Fetches.Load())
	}
}

// A replacement that has answered a call (Confirm) and then fails was
// revoked, not caught in a glitch: it is probed and replaced at once.
func TestRejectedConfirmedReplacementReplaced(t *testing.T) {
	e, fresh := replacedOnce(t)
	ctx := context.Background()
	e.cache.Confirm(fresh)
	fetches := e.fake.Fetches.Load()
	e.fake.Revoke(fresh.Value)
	e.clock.Advance(10 * time.Second)
	again, replay, err := e.cache.Rejected(ctx, fresh)
	if err != nil || !replay || again.Value == fresh.Value || e.fake.Fetches.Load() != fetches+1 {
		t.Fatalf("a confirmed replacement revoked within the minimum age: replay %v, %d → %d fetches, %v",
			replay, fetches, e.fake.Fetches.Load(), err)
	}
}

func TestRejectedProbeSingleFlight(t *testing.T) {
	e := newEnv(t, credential.APIStable, false, nil)
	ctx := context.Background()
	tok, _ := e.cache.Token(ctx)
	e.clock.Advance(2 * time.Minute)
	var wg sync.WaitGroup
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, replay, err := e.cache.Rejected(ctx, tok); replay || err != nil {
				t.Errorf("valid token: replay %v, err %v", replay, err)
			}
		}()
	}
	wg.Wait()
	if p := e.fake.Probes.Load(); p != 1 {
		t.Fatalf("100 rejections of a valid token made %d probes; want 1", p)
	}
	if f := e.fake.Fetches.Load(); f != 1 {
		t.Fatalf("a valid token was refetched (%d fetches)", f)
	}
}

// errProber is a source whose probe fails on the network.
type errProber struct{ *storetest.Fake }

func (errProber) Probe(context.Context, *credential.Token) (bool, error) {
	return false, errors.New("network down")
}

func TestRejectedProbeErrorKeepsToken(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, nil)
	e.cache.SetSource(errProber{e.fake})
	ctx := context.Background()
	tok, _ := e.cache.Token(ctx)
	e.clock.Advance(2 * time.Minute)
	if _, replay, err := e.cache.Rejected(ctx, tok); replay || err != nil || e.fake.Fetches.Load() != 1 {
		t.Fatalf("a probe error invalidated the token: replay %v, err %v, %d fetches", replay, err, e.fake.Fetches.Load())
	}
}

func TestBackoff(t *testing.T) {
	e := newEnv(t, credential.APIStable, false, nil)
	var fails atomic.Int64
	e.cache.SetSource(failing{&fails})
	ctx := context.Background()
	var waits []time.Duration
	for range 9 {
		_, err := e.cache.Token(ctx)
		var be *credential.BackoffError
		if errors.As(err, &be) {
			t.Fatal("a call after the backoff was refused")
		}
		_, err = e.cache.Token(ctx)
		if !errors.As(err, &be) {
			t.Fatalf("no backoff after a failure: %v", err)
		}
		waits = append(waits, be.RetryIn)
		e.clock.Advance(be.RetryIn)
	}
	want := []time.Duration{5, 10, 20, 40, 80, 160, 300, 300, 300}
	for i, w := range want {
		if waits[i] != w*time.Second {
			t.Fatalf("backoff %d = %v; want %v (all: %v)", i, waits[i], w*time.Second, waits)
		}
	}
	if fails.Load() != 9 {
		t.Fatalf("%d fetches in 9 backoff periods", fails.Load())
	}
}

type failing struct{ n *atomic.Int64 }

func (f failing) Fetch(context.Context, credential.FetchOptions) (*credential.Token, error) {
	f.n.Add(1)
	return nil, &credential.APIError{Code: -1, Msg: "system busy rid: 1234-5678", Endpoint: "token"}
}

func TestCeiling(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	e := newEnv(t, credential.APIClassic, false, func(c *credential.Config) {
		c.Ceiling, c.MinAge, c.Logger = 3, -1, zap.New(core)
	})
	ctx := context.Background()
	var err error
	for range 10 {
		var tok *credential.Token
		tok, err = e.cache.Token(ctx)
		if err != nil {
			e.clock.Advance(6 * time.Minute) // past the backoff
			continue
		}
		e.fake.Revoke(tok.Value)
		e.cache.Invalidate(tok)
	}
	if !errors.Is(err, credential.ErrFetchCeiling) {
		t.Fatalf("past the ceiling: %v; want ErrFetchCeiling", err)
	}
	if f := e.fake.Fetches.Load(); f != 3 {
		t.Fatalf("%d fetches with a ceiling of 3", f)
	}
	if !e.cache.Status().CeilingReached || e.obs.ceiling.Load() == 0 {
		t.Fatal("the ceiling is not in the status or the observer")
	}
	if n := logs.FilterMessageSnippet("ceiling").Len(); n != 1 {
		t.Fatalf("ceiling logged %d times; want once", n)
	}
}

func TestCloseCancelsFetch(t *testing.T) {
	e := newEnv(t, credential.APIStable, false, func(c *credential.Config) { c.FetchTimeout = time.Hour })
	hold := make(chan struct{})
	defer close(hold)
	e.fake.Hold.Store(&hold)
	done := make(chan error, 1)
	go func() {
		_, err := e.cache.Token(context.Background())
		done <- err
	}()
	e.cache.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a fetch outlived Close")
		}
	case <-time.After(10 * time.Second): // a deadlock guard, not a timing assertion
		t.Fatal("Close did not end the fetch in flight")
	}
}

func TestClientHangupDoesNotCancelFetch(t *testing.T) {
	e := newEnv(t, credential.APIStable, false, nil)
	hold := make(chan struct{})
	e.fake.Hold.Store(&hold)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := e.cache.Token(ctx); done <- err }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("hung-up client got %v", err)
	}
	e.fake.Hold.Store(nil)
	close(hold)
	if _, err := e.cache.Token(context.Background()); err != nil || e.fake.Fetches.Load() != 1 {
		t.Fatalf("the detached fetch did not serve the next caller: %v, %d fetches", err, e.fake.Fetches.Load())
	}
}

func TestCompareAndInvalidateAndRecent(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, nil)
	ctx := context.Background()
	var seen []string
	for range 6 {
		tok, _ := e.cache.Token(ctx)
		seen = append(seen, tok.Value)
		if !e.cache.Invalidate(tok) {
			t.Fatal("Invalidate of the current token failed")
		}
		if e.cache.Invalidate(tok) {
			t.Fatal("Invalidate of a dropped token succeeded")
		}
	}
	got := e.cache.Recent()
	if len(got) != 4 || got[3] != seen[5] || got[0] != seen[2] {
		t.Fatalf("Recent = %v; want the last 4 of %v", got, seen)
	}
}

func TestSchedulerOneGoroutineForManyCaches(t *testing.T) {
	clock := storetest.NewClock()
	s := credential.NewScheduler(clock.Now)
	fake := storetest.NewFake(clock, credential.APIClassic)
	var caches []*credential.Cache
	for range 1000 {
		c := credential.New(credential.Config{Source: fake, Now: clock.Now, Scheduler: s, Window: credential.ClassicWindow})
		caches = append(caches, c)
		if _, err := c.Token(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Count the goroutines running engine code, not the process's total,
	// which a straggler of an earlier test can move: the scheduler's loop
	// must be the only one, however many caches there are.
	if n, loops := engineGoroutines(); n != 1 || loops != 1 {
		t.Fatalf("1000 caches: %d goroutines in the engine (%d scheduler loops); want 1 and 1", n, loops)
	}
	if s.Len() != 1000 {
		t.Fatalf("%d scheduled", s.Len())
	}
	// Renewals spread over the classic window (9–11 min before expiry).
	minAt, maxAt := caches[0].RenewAt(), caches[0].RenewAt()
	for _, c := range caches {
		at := c.RenewAt()
		left := c.Current().ExpiresAt.Sub(at)
		if left < 9*time.Minute || left > 11*time.Minute {
			t.Fatalf("renewal %v before expiry", left)
		}
		if at.Before(minAt) {
			minAt = at
		}
		if at.After(maxAt) {
			maxAt = at
		}
	}
	if maxAt.Sub(minAt) < time.Minute {
		t.Fatalf("renewals bunched within %v", maxAt.Sub(minAt))
	}
	// Past the renewal time every cache renews once.
	clock.Advance(115 * time.Minute)
	s.Poke()
	deadline := time.Now().Add(20 * time.Second)
	for fake.Fetches.Load() < 2000 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	s.Wait()
	if f := fake.Fetches.Load(); f != 2000 {
		t.Fatalf("%d fetches after the renewal time; want 2000", f)
	}
	for _, c := range caches {
		c.Close()
	}
	if s.Len() != 0 {
		t.Fatalf("%d still scheduled after Close", s.Len())
	}
}

// Exactly one probe goes through while the breaker is half-open.
func TestBreakerSingleProbe(t *testing.T) {
	clock := storetest.NewClock()
	seal, _ := credential.NewSealer(testSecret, "wxunit")
	obs := &countObs{}
	core, logs := observer.New(zap.InfoLevel)
	sh := credential.NewShared(memstore.New().Open(), seal, credential.SharedOptions{Now: clock.Now, Observer: obs, Logger: zap.New(core)})
	ctx := context.Background()
	boom := errors.New("boom")
	if err := sh.Do(ctx, "get", func(context.Context) error { return boom }); err == nil || !sh.BreakerOpen() {
		t.Fatal("a failure did not open the breaker")
	}
	if err := sh.Do(ctx, "get", func(context.Context) error { t.Error("called while open"); return nil }); err == nil {
		t.Fatal("open breaker let a call through")
	}
	clock.Advance(6 * time.Second)
	var inside, refused atomic.Int64
	gate := make(chan struct{})
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			err := sh.Do(ctx, "get", func(context.Context) error {
				inside.Add(1)
				<-gate
				return nil
			})
			if err != nil {
				refused.Add(1)
			}
		}()
	}
	close(start)
	// The 49 that are refused return at once; the probe waits on gate.
	for refused.Load() < 49 && inside.Load() < 2 {
		runtime.Gosched()
	}
	close(gate)
	wg.Wait()
	if n := inside.Load(); n != 1 {
		t.Fatalf("%d calls went through the half-open breaker; want exactly 1", n)
	}
	if sh.BreakerOpen() {
		t.Fatal("a successful probe did not close the breaker")
	}
	if obs.storeErrors.Load() != 1 {
		t.Fatalf("%d store errors", obs.storeErrors.Load())
	}
	// One warning per opening, however many failures keep it open.
	clock.Advance(6 * time.Second)
	_ = sh.Do(ctx, "get", func(context.Context) error { return boom })
	clock.Advance(6 * time.Second)
	_ = sh.Do(ctx, "get", func(context.Context) error { return boom }) // the probe fails: still the same opening
	if n := logs.FilterMessageSnippet("credential store failed").Len(); n != 2 {
		t.Fatalf("%d warnings for two openings; want 2", n)
	}
}

// Without a minimum age, a token the endpoint vouched for is not given up
// on again by every following rejection: one fetch, not one per call.
func TestVouchedTokenNotRefetchedPerCall(t *testing.T) {
	e := newEnv(t, credential.APIStable, false, func(c *credential.Config) { c.MinAge = -1 })
	tok, _ := e.cache.Token(context.Background())
	e.fake.Break(tok.Value)
	for range 50 {
		e.clock.Advance(200 * time.Millisecond)
		e.call(t, false)
	}
	if f := e.fake.Fetches.Load(); f != 2 {
		t.Fatalf("50 rejections of a vouched token in 10 s: %d fetches; want 2", f)
	}
}

// The once-a-minute peek adopts a peer's newer token, never an older one,
// and writes the instance's own token back into an emptied store.
func TestPeekAdoptsPeerToken(t *testing.T) {
	clock := storetest.NewClock()
	fake := storetest.NewFake(clock, credential.APIStable)
	store := memstore.New()
	seal, _ := credential.NewSealer(testSecret, "wxunit")
	sh := credential.NewShared(store.Open(), seal, credential.SharedOptions{Now: clock.Now})
	c := credential.New(credential.Config{Source: fake, Shared: sh, Now: clock.Now})
	defer c.Close()
	ctx := context.Background()
	mine, _ := c.Token(ctx)
	clock.Advance(time.Minute)
	older := credential.NewToken("OLDER", 7200, mine.FetchedAt.Add(-time.Second), "fetch")
	if err := store.Open().Delete(ctx, sh.Key("access_token")); err != nil {
		t.Fatal(err)
	}
	sh.Store(ctx, "access_token", older)
	c.Tick()
	if c.Current().Value != mine.Value {
		t.Fatal("peek adopted an older token")
	}
	newer := credential.NewToken("NEWER", 7200, clock.Now(), "fetch")
	if err := store.Open().Delete(ctx, sh.Key("access_token")); err != nil {
		t.Fatal(err)
	}
	sh.Store(ctx, "access_token", newer)
	c.Tick()
	if c.Current().Value != "NEWER" {
		t.Fatal("peek did not adopt a peer's newer token")
	}
	_ = store.Open().Delete(ctx, sh.Key("access_token"))
	c.Tick()
	if got := sh.Load(ctx, "access_token"); got == nil || got.Value != "NEWER" {
		t.Fatal("peek did not write the token back into an emptied store")
	}
	if fake.Fetches.Load() != 1 {
		t.Fatalf("%d fetches", fake.Fetches.Load())
	}
}

// force_refresh keeps WeChat's limits: 30 s apart and 20 a day, however
// much evidence there is.
func TestForceRefreshLimits(t *testing.T) {
	e := newEnv(t, credential.APIStable, false, func(c *credential.Config) { c.Ceiling = -1 })
	// Start just after midnight in Beijing, so the run stays in one day.
	bj := e.clock.Now().In(time.FixedZone("UTC+8", 8*3600))
	midnight := time.Date(bj.Year(), bj.Month(), bj.Day()+1, 0, 1, 0, 0, bj.Location())
	e.clock.Advance(midnight.Sub(bj))
	ctx := context.Background()
	for range 200 {
		tok, err := e.cache.Token(ctx)
		if err != nil {
			e.clock.Advance(time.Minute)
			continue
		}
		e.fake.Break(tok.Value)
		e.clock.Advance(61 * time.Second)
		e.call(t, false)
	}
	if f := e.fake.Forced.Load(); f != 20 {
		t.Fatalf("%d force_refresh in a day of evidence; want the 20 allowed", f)
	}
	if st := e.cache.Status(); st.Forced > 20 {
		t.Fatalf("status counts %d force_refresh", st.Forced)
	}
}

// A simulated day on a fake clock: refresh-ahead renews every token
// before any request needs it, alone and in a 3-instance cluster where
// one instance renews and the others adopt its token.
func TestRefreshAheadDay(t *testing.T) {
	for _, n := range []int{1, 3} {
		for _, api := range []string{credential.APIStable, credential.APIClassic} {
			clock := storetest.NewClock()
			fake := storetest.NewFake(clock, api)
			store := memstore.New()
			store.Now = clock.Now
			window := credential.StableWindow
			if api == credential.APIClassic {
				window = credential.ClassicWindow
			}
			var caches []*credential.Cache
			for range n {
				cfg := credential.Config{Source: fake, Now: clock.Now, Window: window}
				if n > 1 {
					seal, _ := credential.NewSealer(testSecret, "wxday")
					cfg.Shared = credential.NewShared(store.Open(), seal, credential.SharedOptions{Now: clock.Now})
				}
				c := credential.New(cfg)
				defer c.Close()
				caches = append(caches, c)
			}
			ctx := context.Background()
			for _, c := range caches {
				if _, err := c.Token(ctx); err != nil {
					t.Fatal(err)
				}
			}
			waited := 0
			for range 24 * 60 {
				clock.Advance(time.Minute)
				for _, c := range caches {
					c.Tick() // what the scheduler does when due, and the minute peek
					if !c.Current().UseBy().After(clock.Now()) {
						waited++
					}
					if _, err := c.Token(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			f := fake.Fetches.Load()
			if waited != 0 || f < 11 || f > 16 {
				t.Errorf("%s × %d: %d requests waited, %d fetches in 24 h; want 0 and about 13", api, n, waited, f)
			}
		}
	}
}

// publish never replaces a token with an older one, whoever hands it in.
func TestPublishNewerWins(t *testing.T) {
	clock := storetest.NewClock()
	store := memstore.New()
	seal, _ := credential.NewSealer(testSecret, "wxunit")
	sh := credential.NewShared(store.Open(), seal, credential.SharedOptions{Now: clock.Now})
	c := credential.New(credential.Config{Source: storetest.NewFake(clock, credential.APIStable), Shared: sh, Now: clock.Now})
	defer c.Close()
	ctx := context.Background()
	mine, _ := c.Token(ctx)
	if err := store.Open().Delete(ctx, sh.Key("access_token")); err != nil {
		t.Fatal(err)
	}
	sh.Store(ctx, "access_token", credential.NewToken("OLDER", 7200, mine.FetchedAt.Add(-time.Minute), "fetch"))
	c.Warm(ctx)
	if c.Current().Value != mine.Value {
		t.Fatal("publish replaced a token with an older one")
	}
}

// engineGoroutines counts the goroutines whose stack is in this package's
// code, and among them those running the scheduler's loop.
func engineGoroutines() (n, loops int) {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "testing.tRunner") {
			continue // the test itself
		}
		if strings.Contains(g, "internal/credential.") {
			n++
		}
		if strings.Contains(g, "credential.(*Scheduler).loop") {
			loops++
		}
	}
	return n, loops
}

// replacedOnce is a classic-API cache whose first token, 10 minutes old,
// was revoked and rejected once: fresh is its replacement, not yet
// confirmed by any call.
func replacedOnce(t *testing.T) (*env, *credential.Token) {
	t.Helper()
	e := newEnv(t, credential.APIClassic, false, nil)
	ctx := context.Background()
	tok, _ := e.cache.Token(ctx)
	e.clock.Advance(10 * time.Minute)
	e.fake.Revoke(tok.Value)
	fresh, replay, err := e.cache.Rejected(ctx, tok)
	if err != nil || !replay {
		t.Fatalf("the first rejection: replay %v, %v", replay, err)
	}
	return e, fresh
}
