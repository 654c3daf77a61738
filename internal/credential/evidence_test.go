package credential_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memstore"
	"github.com/caddy-wechat/wechat/internal/credential/storetest"
)

// Issue 20 §1: a verdict or a vouch is evidence about the moment it was
// taken, not a licence. A revocation 0.5 s after any evidence that made
// the gateway keep its token is repaired on the first call that meets
// it, stable and classic, alone and over a store.
func TestRevocationAfterEvidenceRepairedAtOnce(t *testing.T) {
	scenarios := map[string]func(t *testing.T, e *env){
		// The probe says "valid" for the 40001-only API's path only.
		"after a 40001-only call": func(t *testing.T, e *env) {
			for range 3 {
				e.clock.Advance(100 * time.Millisecond)
				if code := e.call(t, true); code != 40001 {
					t.Fatalf("the 40001-only API answered %d", code)
				}
			}
		},
		// The glitch leaves a replacement (classic) or a vouched token
		// (stable) held; the first success after it ends the hold.
		"after a glitch and its recovery": func(t *testing.T, e *env) {
			e.fake.Glitch.Store(true)
			for range 20 {
				e.clock.Advance(100 * time.Millisecond)
				e.call(t, false)
			}
			e.fake.Glitch.Store(false)
			e.clock.Advance(100 * time.Millisecond)
			if code := e.call(t, false); code != 0 {
				t.Fatalf("the first call after the glitch answered %d", code)
			}
		},
		// A token just fetched to replace a revoked one, confirmed by
		// its replay.
		"after a fresh fetch": func(t *testing.T, e *env) {
			e.fake.Revoke(e.cache.Current().Value)
			if code := e.call(t, false); code != 0 {
				t.Fatalf("the call that met the first revocation answered %d", code)
			}
		},
	}
	for _, api := range []string{credential.APIStable, credential.APIClassic} {
		for _, shared := range []bool{false, true} {
			for name, before := range scenarios {
				label := api + "/" + name
				if shared {
					label += "/shared"
				}
				t.Run(label, func(t *testing.T) {
					e := newEnv(t, api, shared, nil)
					if code := e.call(t, false); code != 0 {
						t.Fatal(code)
					}
					e.clock.Advance(10 * time.Minute)
					before(t, e)
					e.clock.Advance(500 * time.Millisecond)
					revoked := e.cache.Current().Value
					e.fake.Revoke(revoked) // another system's force_refresh, a secret reset
					probes, fetches := e.fake.Probes.Load(), e.fake.Fetches.Load()
					if code := e.call(t, false); code != 0 {
						t.Fatalf("the first call after the revocation answered %d", code)
					}
					if e.cache.Current().Value == revoked {
						t.Fatal("the revoked token is still current")
					}
					if p, f := e.fake.Probes.Load()-probes, e.fake.Fetches.Load()-fetches; p > 1 || f > 1 {
						t.Fatalf("the repair cost %d probes and %d fetches; want at most one each", p, f)
					}
				})
			}
		}
	}
}

// Probes stay bounded: a steady 40001-only caller of one API costs at
// most 2 probes a minute, and 40001s of ever new paths at most one a
// second per token; neither fetches.
func TestProbesBounded(t *testing.T) {
	for _, api := range []string{credential.APIStable, credential.APIClassic} {
		t.Run(api, func(t *testing.T) {
			e := newEnv(t, api, false, nil)
			e.call(t, false)
			for range 6000 { // 10 minutes, a call every 100 ms
				e.clock.Advance(100 * time.Millisecond)
				e.call(t, true)
				e.call(t, false)
			}
			if p := e.fake.Probes.Load(); p > 21 {
				t.Fatalf("10 min of a 40001-only API: %d probes; want ≤ 2 a minute", p)
			}
			probes := e.fake.Probes.Load()
			start := e.clock.Now()
			for i := range 6000 { // a minute of 40001s on 6000 different paths
				e.clock.Advance(10 * time.Millisecond)
				e.callPath(t, fmt.Sprintf("/cgi-bin/path/%d", i), true)
			}
			spent := e.clock.Now().Sub(start)
			if p := e.fake.Probes.Load() - probes; float64(p) > spent.Seconds()+1 {
				t.Fatalf("%v of 40001s on new paths: %d probes; want ≤ 1 a second", spent, p)
			}
			if f := e.fake.Fetches.Load(); f != 1 {
				t.Fatalf("a valid token was refetched: %d fetches", f)
			}
		})
	}
}

// codeProber answers every probe with a WeChat errcode that is not about
// the token, until code is set to 0.
type codeProber struct {
	*storetest.Fake
	code   atomic.Int64
	probes atomic.Int64
}

func (p *codeProber) Probe(ctx context.Context, t *credential.Token) (bool, error) {
	p.probes.Add(1)
	if c := p.code.Load(); c != 0 {
		return false, &credential.APIError{Code: int(c), Endpoint: "probe", Msg: "system busy"}
	}
	return p.Fake.Probe(ctx, t)
}

// A probe answered with -1 or 45009 is no verdict: the token is kept (the
// caller gets WeChat's answer, nothing is fetched or invalidated), and
// further probes space out, 1 s doubling to 30 s, so a busy WeChat is not
// probed in a loop. Once the probe answers again, a revocation is
// repaired on the first call that meets it.
func TestProbeWithoutVerdict(t *testing.T) {
	for _, code := range []int64{-1, 45009} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			e := newEnv(t, credential.APIClassic, false, nil)
			p := &codeProber{Fake: e.fake}
			p.code.Store(code)
			e.cache.SetSource(p)
			tok, _ := e.cache.Token(context.Background())
			e.clock.Advance(10 * time.Minute)
			for range 600 { // a minute of 40001s
				e.clock.Advance(100 * time.Millisecond)
				if c := e.call(t, true); c != 40001 {
					t.Fatal(c)
				}
			}
			if e.cache.Current() != tok || e.fake.Fetches.Load() != 1 {
				t.Fatalf("a probe without verdict dropped the token (%d fetches)", e.fake.Fetches.Load())
			}
			// 1+2+4+8+16+30 s: 6 or 7 probes in a minute, not 60 or 600
			// (and not 5, as a backoff starting at 4 s would give).
			if n := p.probes.Load(); n < 6 || n > 7 {
				t.Fatalf("a minute of 40001s with the probe answering %d: %d probes; want 6 or so", code, n)
			}
			p.code.Store(0)
			e.clock.Advance(30 * time.Second)
			e.fake.Revoke(tok.Value)
			if c := e.call(t, false); c != 0 {
				t.Fatalf("a revocation after the probe recovered: %d", c)
			}
		})
	}
}

// AccessTokenSource.Probe reads get_api_domain_ip's errcode: 0 valid, a
// token errcode invalid, anything else an error (no verdict), redacted.
func TestAccessTokenProbeVerdicts(t *testing.T) {
	var code atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/cgi-bin/get_api_domain_ip" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, `{"errcode":%d,"errmsg":"echo %s rid: 1-2-3"}`, code.Load(), r.URL.Query().Get("access_token"))
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	src := &credential.AccessTokenSource{Bases: []*url.URL{base}, AppID: "wxprobe", Secret: "probe-secret"}
	tok := credential.NewToken("TOKEN-VALUE-123", 7200, time.Now(), "fetch")
	for _, c := range []struct {
		code  int64
		valid bool
		err   bool
	}{{0, true, false}, {40001, false, false}, {42001, false, false}, {-1, false, true}, {45009, false, true}, {48001, false, true}} {
		code.Store(c.code)
		valid, err := src.Probe(context.Background(), tok)
		var ae *credential.APIError
		if valid != c.valid || (err != nil) != c.err || (c.err && !errors.As(err, &ae)) {
			t.Fatalf("probe answered %d: valid %v, err %v", c.code, valid, err)
		}
		if err != nil && (ae.Code != int(c.code) || containsToken(err.Error(), tok.Value)) {
			t.Fatalf("probe error %q: wrong code or holds the token", err)
		}
	}
}

func containsToken(s, tok string) bool {
	for i := 0; i+len(tok) <= len(s); i++ {
		if s[i:i+len(tok)] == tok {
			return true
		}
	}
	return false
}

// A peer's token fetched before our evidence may have died in the same
// revocation: it is not adopted from the store for the replay (one fetch
// instead), and, had it been, it would not be held (its failures read as
// a glitch): that answered 40001 to every call for up to min_token_age
// (the soak's 6.5 s on file storage).
func TestPeerTokenFromBeforeTheEvidenceIsNotHeld(t *testing.T) {
	for _, api := range []string{credential.APIStable, credential.APIClassic} {
		t.Run(api, func(t *testing.T) {
			clock := storetest.NewClock()
			fake := storetest.NewFake(clock, api)
			seal, err := credential.NewSealer(testSecret, "wxunit")
			if err != nil {
				t.Fatal(err)
			}
			store := memstore.New()
			caches := make([]*credential.Cache, 2)
			for i := range caches {
				sh := credential.NewShared(store.Open(), seal, credential.SharedOptions{Now: clock.Now})
				caches[i] = credential.New(credential.Config{Source: fake, Now: clock.Now, FetchTimeout: time.Second,
					Sleep: clock.Sleep, Shared: sh, MinAge: time.Minute, PeekInterval: -1})
				t.Cleanup(func() { caches[i].Close() })
			}
			a, b := &env{clock: clock, fake: fake, cache: caches[0]}, &env{clock: clock, fake: fake, cache: caches[1]}
			if code := a.call(t, false); code != 0 {
				t.Fatal(code)
			}
			t1 := a.cache.Current().Value
			clock.Advance(10 * time.Minute)
			fake.Revoke(t1) // the first revocation: b meets it and stores a replacement
			if code := b.call(t, false); code != 0 {
				t.Fatalf("b after the first revocation: %d", code)
			}
			t2 := b.cache.Current().Value
			if t2 == t1 {
				t.Fatal("b kept the revoked token")
			}
			clock.Advance(time.Second)
			fake.Revoke(t2) // the second: a still holds t1, and the store t2
			fetches := fake.Fetches.Load()
			if code := a.call(t, false); code != 0 {
				t.Fatalf("the first call after the second revocation answered %d: the peer's dead token was adopted for the replay", code)
			}
			if f := fake.Fetches.Load() - fetches; f != 1 {
				t.Fatalf("the repair cost %d fetches; want 1", f)
			}
			for i := range 3 {
				clock.Advance(100 * time.Millisecond)
				if code := a.call(t, false); code != 0 {
					t.Fatalf("call %d after the second revocation answered %d: the peer's dead token is held", i, code)
				}
			}
		})
	}
}

// A token holds a "valid" verdict for each of several API paths at once:
// a verdict for a second path does not push out the first, so a caller of
// the first path is answered without a new probe.
func TestVerdictsKeptPerPath(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, nil)
	e.call(t, false)
	for _, path := range []string{"/cgi-bin/a", "/cgi-bin/b", "/cgi-bin/a", "/cgi-bin/b"} {
		e.clock.Advance(1100 * time.Millisecond) // past the probe spacing
		if c := e.callPath(t, path, true); c != 40001 {
			t.Fatalf("%s: %d", path, c)
		}
	}
	if p := e.fake.Probes.Load(); p != 2 {
		t.Fatalf("two paths, each rejected twice within the verdict's life: %d probes; want 2", p)
	}
	if f := e.fake.Fetches.Load(); f != 1 {
		t.Fatalf("a valid token was refetched: %d fetches", f)
	}
}

// The backoff of probes without a verdict starts again at 1 s once a
// probe gives one: a busy spell long ago does not space out the probes
// of the next.
func TestProbeBackoffRestartsAfterAVerdict(t *testing.T) {
	e := newEnv(t, credential.APIClassic, false, nil)
	p := &codeProber{Fake: e.fake}
	e.cache.SetSource(p)
	e.call(t, false)
	n := 0
	probe := func(wait time.Duration) {
		t.Helper()
		e.clock.Advance(wait)
		n++ // a new path each time: no verdict of an earlier one answers it
		if c := e.callPath(t, fmt.Sprintf("/cgi-bin/p/%d", n), true); c != 40001 {
			t.Fatal(c)
		}
	}
	p.code.Store(-1)
	probe(time.Second)             // no verdict: quiet 1 s
	probe(1100 * time.Millisecond) // quiet 2 s
	probe(2100 * time.Millisecond) // quiet 4 s
	p.code.Store(0)
	probe(4100 * time.Millisecond) // valid: the backoff restarts
	p.code.Store(-1)
	probe(1100 * time.Millisecond) // no verdict: quiet 1 s, not 8 s
	probe(1100 * time.Millisecond)
	if got := p.probes.Load(); got != 6 {
		t.Fatalf("%d probes; want 6 (one per call: each came after its quiet time)", got)
	}
}
