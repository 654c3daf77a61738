package credential_test

import (
	"context"
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
)

// Tests for the survivors of the second mutation round (MUTATION.md):
// each pins a behaviour that one or more surviving mutants changed.

// opDeadline runs one backend call through sh and returns the deadline
// its ctx carried, with the times just before and just after the call.
func opDeadline(t *testing.T, sh *credential.Shared) (dl, before, after time.Time) {
	t.Helper()
	var ok bool
	before = time.Now()
	_ = sh.Do(context.Background(), "get", func(ctx context.Context) error {
		dl, ok = ctx.Deadline()
		return nil
	})
	after = time.Now()
	if !ok {
		t.Fatal("a backend call ran without a deadline")
	}
	return dl, before, after
}

// Every backend call is bounded by OpTimeout: 100 ms when it is zero or
// negative, the configured value otherwise. A zero timeout kept as it is
// would hand every call a ctx already past its deadline, and the store
// would never answer (mutants: the default condition negated or made
// strict, 100 / time.Millisecond). The deadline is compared with the
// times around the call, so load can only widen the margins, never
// break them.
func TestStoreOpTimeout(t *testing.T) {
	seal, _ := credential.NewSealer(testSecret, "wxunit")
	for _, c := range []struct {
		set, want time.Duration
	}{
		{0, 100 * time.Millisecond},
		{-time.Second, 100 * time.Millisecond},
		{time.Hour, time.Hour},
	} {
		sh := credential.NewShared(memstore.New().Open(), seal, credential.SharedOptions{OpTimeout: c.set})
		dl, before, after := opDeadline(t, sh)
		if dl.Sub(before) < c.want || dl.Sub(after) > c.want {
			t.Fatalf("OpTimeout %v: the call's deadline is %v after its start; want %v", c.set, dl.Sub(before), c.want)
		}
	}
}

// A token that expires this very instant is not written to the store:
// its TTL would be 0, which a backend reads as "no expiry", so a dead
// token would sit in the store for good (mutant: ttl < 0 for ttl <= 0).
func TestTokenExpiringNowNotStored(t *testing.T) {
	clock := storetest.NewClock()
	store := memstore.New()
	store.Now = clock.Now
	seal, _ := credential.NewSealer(testSecret, "wxunit")
	sh := credential.NewShared(store.Open(), seal, credential.SharedOptions{Now: clock.Now})
	tok := credential.NewToken("ENDS-NOW", 7200, clock.Now().Add(-7200*time.Second), "fetch")
	if !tok.ExpiresAt.Equal(clock.Now()) {
		t.Fatal("test setup: the token does not expire now")
	}
	if got := sh.Store(context.Background(), "access_token", tok); got != tok {
		t.Fatalf("Store returned %v", got)
	}
	if _, _, err := store.Open().Get(context.Background(), sh.Key("access_token")); !errors.Is(err, credential.ErrNotFound) {
		t.Fatalf("a token expiring now was written to the store (Get: %v)", err)
	}
	if sh.Ops() != 0 {
		t.Fatalf("%d store calls for a token with no time left; want 0", sh.Ops())
	}
}

// beforeFirst runs hook once, just before the first call of op (an Add
// or a CompareAndSwap) on a key that ends in suffix: a peer's write
// landing between a read and a write.
type beforeFirst struct {
	credential.Backend
	op, suffix string
	once       sync.Once
	hook       func()
}

func (b *beforeFirst) fire(op, key string) {
	if op == b.op && strings.HasSuffix(key, b.suffix) {
		b.once.Do(b.hook)
	}
}

func (b *beforeFirst) Add(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	b.fire("add", key)
	return b.Backend.Add(ctx, key, v, ttl)
}

func (b *beforeFirst) CompareAndSwap(ctx context.Context, key string, ver credential.Version, v []byte, ttl time.Duration) (bool, error) {
	b.fire("cas", key)
	return b.Backend.CompareAndSwap(ctx, key, ver, v, ttl)
}

// Newer wins even when a peer's write lands between save's read and its
// Add: the lost Add is not the end. save reads again and returns the
// peer's token if it is newer, or overwrites it if it is older (mutant:
// save returns its own token as soon as a write call does not fail,
// stored or not, leaving an older peer token in the store).
func TestSaveAfterLostAddNewerWins(t *testing.T) {
	for _, peerNewer := range []bool{true, false} {
		clock := storetest.NewClock()
		store := memstore.New()
		store.Now = clock.Now
		seal, _ := credential.NewSealer(testSecret, "wxunit")
		peer := credential.NewShared(store.Open(), seal, credential.SharedOptions{Now: clock.Now})
		ctx := context.Background()
		now := clock.Now()
		peerAt := now.Add(-2 * time.Minute)
		if peerNewer {
			peerAt = now
		}
		peerTok := credential.NewToken("PEER", 7200, peerAt, "fetch")
		mine := credential.NewToken("MINE", 7200, now.Add(-time.Minute), "fetch")
		hb := &beforeFirst{Backend: store.Open(), op: "add", suffix: ":access_token", hook: func() { peer.Store(ctx, "access_token", peerTok) }}
		sh := credential.NewShared(hb, seal, credential.SharedOptions{Now: clock.Now})
		want := "MINE"
		if peerNewer {
			want = "PEER"
		}
		got := sh.Store(ctx, "access_token", mine)
		if got.Value != want {
			t.Fatalf("peer newer %v: Store returned %q; want %q", peerNewer, got.Value, want)
		}
		if held := peer.Load(ctx, "access_token"); held == nil || held.Value != want {
			t.Fatalf("peer newer %v: the store holds %v; want %q", peerNewer, held, want)
		}
	}
}

// pollLog counts a waiter's calls: Adds of the lease key, and the times
// of the Gets of the token key.
type pollLog struct {
	credential.Backend
	key        string
	mu         sync.Mutex
	leaseAdds  int
	tokenReads []time.Time
}

func (p *pollLog) Add(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	if key == p.key+":lease" {
		p.mu.Lock()
		p.leaseAdds++
		p.mu.Unlock()
	}
	return p.Backend.Add(ctx, key, v, ttl)
}

func (p *pollLog) Get(ctx context.Context, key string) ([]byte, credential.Version, error) {
	if key == p.key {
		p.mu.Lock()
		p.tokenReads = append(p.tokenReads, time.Now())
		p.mu.Unlock()
	}
	return p.Backend.Get(ctx, key)
}

func (p *pollLog) counts() (adds, reads int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.leaseAdds, len(p.tokenReads)
}

// A waiter whose lease is held by a peer polls the store: it reads the
// value and checks the lease, no more often than every 25 ms, tries for
// the lease again only once it is gone, and takes the peer's value as
// soon as it is stored, lease still held, without fetching (mutants: the
// poll interval 25 ms minus the jitter; wait giving up after a read or
// a lease check that succeeded, which turns each poll into a new Add of
// the lease). The spacing is a lower bound that a loaded machine can
// only widen: each poll's timer is set after the previous read.
func TestWaiterPollsUntilPeerStores(t *testing.T) {
	overlapIfFast(t)
	clock := storetest.NewClock()
	store := memstore.New()
	store.Now = clock.Now
	seal, _ := credential.NewSealer(testSecret, "wxunit")
	peer := credential.NewShared(store.Open(), seal, credential.SharedOptions{Now: clock.Now})
	log := &pollLog{Backend: store.Open(), key: peer.Key("access_token")}
	sh := credential.NewShared(log, seal, credential.SharedOptions{Now: clock.Now})
	fake := storetest.NewFake(clock, credential.APIClassic)
	c := credential.New(credential.Config{Source: fake, Now: clock.Now, Shared: sh})
	defer c.Close()
	ctx := context.Background()
	if won, err := store.Open().Add(ctx, log.key+":lease", peer.SealClaim(log.key+":lease", clock.Now().Add(time.Hour)), time.Hour); !won || err != nil {
		t.Fatal("planting the peer's lease failed")
	}
	type result struct {
		tok *credential.Token
		err error
	}
	done := make(chan result, 1)
	go func() { tok, err := c.Token(ctx); done <- result{tok, err} }()
	const polls = 8
	for {
		select {
		case r := <-done:
			t.Fatalf("the waiter returned while the peer held the lease: %v", r.err)
		default:
		}
		if _, reads := log.counts(); reads > polls {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if adds, _ := log.counts(); adds != 1 {
		t.Fatalf("%d Adds of the held lease while waiting; want 1", adds)
	}
	log.mu.Lock()
	for i := 1; i < len(log.tokenReads); i++ {
		if d := log.tokenReads[i].Sub(log.tokenReads[i-1]); d < 25*time.Millisecond {
			log.mu.Unlock()
			t.Fatalf("poll %d came %v after the previous read; want at least 25ms", i, d)
		}
	}
	log.mu.Unlock()
	peerTok := credential.NewToken("PEER", 7200, clock.Now(), "fetch")
	peer.Store(ctx, "access_token", peerTok)
	for start := store.Ops(); ; {
		select {
		case r := <-done:
			if r.err != nil || r.tok.Value != "PEER" {
				t.Fatalf("the waiter got %v, %v; want the peer's token", r.tok, r.err)
			}
			if f := fake.Fetches.Load(); f != 0 {
				t.Fatalf("%d fetches; want 0", f)
			}
			if adds, _ := log.counts(); adds != 1 {
				t.Fatalf("%d Adds of the lease; want 1", adds)
			}
			return
		default:
		}
		if store.Ops() > start+40 {
			clock.Advance(2 * time.Hour) // let the waiter go
			t.Fatal("the waiter kept polling after the peer stored its token")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// An auxiliary value put while a peer writes the same one ends stored:
// a CompareAndSwap that loses to the peer's write is retried, not taken
// for success (mutant: auxPut returns after any CAS that did not fail).
func TestAuxPutRetriesLostSwap(t *testing.T) {
	store := memstore.New()
	seal, _ := credential.NewSealer(testSecret, "wxunit")
	peer := credential.New(credential.Config{Source: constSource{"x"}, Shared: credential.NewShared(store.Open(), seal, credential.SharedOptions{})})
	defer peer.Close()
	ctx := context.Background()
	hb := &beforeFirst{Backend: store.Open(), op: "cas", suffix: ":aux:ticket", hook: func() {
		if err := peer.Aux().Put(ctx, "ticket", []byte("PEER")); err != nil {
			t.Error(err)
		}
	}}
	c := credential.New(credential.Config{Source: constSource{"x"}, Shared: credential.NewShared(hb, seal, credential.SharedOptions{})})
	defer c.Close()
	for _, v := range []string{"ONE", "TWO"} {
		if err := c.Aux().Put(ctx, "ticket", []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := peer.Aux().Get(ctx, "ticket"); err != nil || string(v) != "TWO" {
		t.Fatalf("the store holds %q, %v; want TWO, put after the peer's write", v, err)
	}
}

// The token API decides the endpoint and whether force_refresh exists:
// no API is the stable endpoint, which can force; classic and WeCom are
// GETs to their own paths and cannot (mutant: api() negated, so "" stays
// "" and a set API reads as stable).
func TestAccessTokenSourceAPIs(t *testing.T) {
	var mu sync.Mutex
	var seen string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Method + " " + r.URL.Path
		mu.Unlock()
		w.Write([]byte(`{"access_token":"T","expires_in":7200}`))
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	for _, c := range []struct {
		api, req string
		force    bool
	}{
		{"", "POST /cgi-bin/stable_token", true},
		{credential.APIStable, "POST /cgi-bin/stable_token", true},
		{credential.APIClassic, "GET /cgi-bin/token", false},
		{credential.APIWork, "GET /cgi-bin/gettoken", false},
	} {
		src := &credential.AccessTokenSource{RT: http.DefaultTransport, Bases: []*url.URL{base}, AppID: "wx", Secret: "s", API: c.api}
		if src.CanForce() != c.force {
			t.Errorf("API %q: CanForce %v; want %v", c.api, src.CanForce(), c.force)
		}
		if _, err := src.Fetch(context.Background(), credential.FetchOptions{}); err != nil {
			t.Fatalf("API %q: %v", c.api, err)
		}
		mu.Lock()
		got := seen
		mu.Unlock()
		if got != c.req {
			t.Errorf("API %q: request %q; want %q", c.api, got, c.req)
		}
	}
}

// A token answer of exactly the size bound is read whole and accepted;
// one byte more is refused as too large (mutants: the read limit one
// byte short, which cuts the answer's last byte; > made >=). The padding
// is leading whitespace, so a cut answer is not JSON.
func TestTokenAnswerSizeBound(t *testing.T) {
	const answer = `{"access_token":"T","expires_in":7200}`
	var size atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat(" ", int(size.Load())-len(answer)) + answer))
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	src := &credential.AccessTokenSource{RT: http.DefaultTransport, Bases: []*url.URL{base}, AppID: "wx", Secret: "s", API: credential.APIClassic}
	size.Store(credential.MaxBody)
	if tok, err := src.Fetch(context.Background(), credential.FetchOptions{}); err != nil || tok.Value != "T" {
		t.Fatalf("an answer of exactly %d bytes: %v", credential.MaxBody, err)
	}
	size.Store(credential.MaxBody + 1)
	if _, err := src.Fetch(context.Background(), credential.FetchOptions{}); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("an answer of %d bytes: %v; want refused as too large", credential.MaxBody+1, err)
	}
}

// Token errcodes are explained per API: WeCom's own codes get WeCom's
// hints, the others the official accounts' ones, and an errcode with no
// hint keeps WeChat's message as it is (mutants: the WeCom test
// negated; the hint test negated, which drops the hint and wraps a
// plain message in parentheses).
func TestExplainTokenErr(t *testing.T) {
	for _, c := range []struct {
		api  string
		code int
		want string
	}{
		{credential.APIWork, 60020, "this server's IP is not a trusted IP of the WeCom app (add it under the app's 企业可信IP) (not allow)"},
		{credential.APIWork, 40001, "bad corpsecret: check the app's Secret in the WeCom admin console (not allow)"},
		{credential.APIWork, 40164, "not allow"},
		{credential.APIStable, 40164, "this server's IP is not in the account's IP whitelist (not allow)"},
		{credential.APIClassic, 40001, "bad secret (not allow)"},
		{credential.APIClassic, 60020, "not allow"},
		{credential.APIStable, 99999, "not allow"},
	} {
		if got := credential.ExplainTokenErr(c.api, c.code, "not allow"); got != c.want {
			t.Errorf("%s %d: %q; want %q", c.api, c.code, got, c.want)
		}
	}
}

// getticketServer answers getticket with body, and records the query.
func getticketServer(t *testing.T, body string) (*url.URL, *atomic.Pointer[url.Values]) {
	var q atomic.Pointer[url.Values]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.URL.Query()
		q.Store(&v)
		if r.URL.Path != "/cgi-bin/ticket/getticket" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u, &q
}

// A JS-SDK ticket is fetched with the current token and comes back with
// its lifetime; an errcode is an *APIError whose message has neither the
// secret (through Redact) nor the token, with or without a Redact
// (mutants: the answer's error test negated, the errcode test negated,
// Redact called only when nil).
func TestTicketSourceFetch(t *testing.T) {
	clock := storetest.NewClock()
	tokens := credential.New(credential.Config{Source: constSource{"TOKEN-VALUE"}, Now: clock.Now})
	defer tokens.Close()
	ctx := context.Background()

	base, q := getticketServer(t, `{"errcode":0,"errmsg":"ok","ticket":"TICKET-1","expires_in":7200}`)
	ts := &credential.TicketSource{Tokens: tokens, Bases: []*url.URL{base}, Type: "jsapi", Now: clock.Now}
	tk, err := ts.Fetch(ctx, credential.FetchOptions{})
	if err != nil || tk.Value != "TICKET-1" {
		t.Fatalf("getticket: %v, %v", tk, err)
	}
	if tk.ExpiresAt.Sub(tk.FetchedAt) != 2*time.Hour || !tk.FetchedAt.Equal(clock.Now()) {
		t.Fatalf("ticket fetched %v, expires %v", tk.FetchedAt, tk.ExpiresAt)
	}
	if v := q.Load(); v == nil || v.Get("access_token") != "TOKEN-VALUE" || v.Get("type") != "jsapi" {
		t.Fatalf("getticket query %v", v)
	}

	const secret = "ThE-SeCrEt"
	base, _ = getticketServer(t, `{"errcode":45009,"errmsg":"quota `+secret+` TOKEN-VALUE rid: r1"}`)
	redact := func(m string) string { return strings.ReplaceAll(m, secret, "[secret]") }
	for _, r := range []func(string) string{redact, nil} {
		ts := &credential.TicketSource{Tokens: tokens, Bases: []*url.URL{base}, Type: "jsapi", Redact: r}
		_, err := ts.Fetch(ctx, credential.FetchOptions{})
		var ae *credential.APIError
		if !errors.As(err, &ae) || ae.Code != 45009 || ae.Endpoint != "getticket" {
			t.Fatalf("redact %v: %v; want errcode 45009 from getticket", r != nil, err)
		}
		if strings.Contains(err.Error(), "TOKEN-VALUE") || !strings.Contains(err.Error(), "[token]") {
			t.Fatalf("the token is not redacted: %v", err)
		}
		if r != nil && (strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "[secret]")) {
			t.Fatalf("the secret is not redacted: %v", err)
		}
	}
}

// A token shorter than four safety margins keeps a quarter of its life
// as its margin, not the full 30 s: a 60 s token is handed out for 45 s
// (mutant: 4/margin, which is 0, so every token keeps 30 s and a 60 s
// token is usable for only half its life).
func TestShortTokenMarginIsAQuarter(t *testing.T) {
	now := time.Now()
	for in, left := range map[int64]time.Duration{60: 15 * time.Second, 120: 30 * time.Second, 7200: 30 * time.Second, 40: 10 * time.Second} {
		tok := credential.NewToken("x", in, now, "fetch")
		if got := tok.ExpiresAt.Sub(tok.UseBy()); got != left {
			t.Errorf("expires_in %d: handed out until %v before expiry; want %v", in, got, left)
		}
	}
}

// A message that is nothing but a rid is stripped to nothing (mutant:
// i <= 0, which keeps a rid found at the very start).
func TestStripRIDAtStart(t *testing.T) {
	for in, want := range map[string]string{
		"rid: 6650a1b2-1c2d":          "",
		"invalid ip rid: 6650a1b2":    "invalid ip",
		"invalid ip, rid: 6650a1b2":   "invalid ip",
		"no request id in this reply": "no request id in this reply",
	} {
		if got := credential.StripRID(in); got != want {
			t.Errorf("StripRID(%q) = %q; want %q", in, got, want)
		}
	}
}

// A stored token value with a space, a control character or DEL is
// refused even when authentic: it would break the query string it is put
// in. The printable characters around them are fine (mutants: the check
// loop never run; a space let through).
func TestSealedTokenValueCharacters(t *testing.T) {
	s, err := credential.NewSealer(testSecret, "wxunit")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for v, ok := range map[string]bool{
		"ab cd": false, " abc": false, "abc\t": false, "a\x00b": false, "a\x7fb": false, "a\x1fb": false,
		"a!b~c": true, "TOKEN_1-x.y": true,
	} {
		sealed := s.SealToken("k", &credential.Token{Value: v, FetchedAt: now, ExpiresAt: now.Add(time.Hour)})
		tok, err := s.OpenToken("k", sealed, now)
		if ok && (err != nil || tok.Value != v) {
			t.Errorf("%q refused: %v", v, err)
		}
		if !ok && err == nil {
			t.Errorf("%q opened", v)
		}
	}
}
