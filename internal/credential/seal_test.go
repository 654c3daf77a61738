package credential_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memstore"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func sealer(t *testing.T, secret string) *credential.Sealer {
	s, err := credential.NewSealer(secret, "wxseal")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealedTokenRoundTripAndAttacks(t *testing.T) {
	now := time.Now()
	s := sealer(t, testSecret)
	tok := credential.NewToken("THE-TOKEN", 7200, now, "fetch")
	v := s.SealToken("k", tok)
	if strings.Contains(string(v), "THE-TOKEN") {
		t.Fatal("sealed value holds the token in clear")
	}
	got, err := s.OpenToken("k", v, now)
	if err != nil || got.Value != "THE-TOKEN" || !got.ExpiresAt.Equal(tok.ExpiresAt) {
		t.Fatalf("round trip: %v %v", got, err)
	}
	if _, err := s.OpenToken("other-key", v, now); err == nil {
		t.Fatal("a value moved to another key was accepted")
	}
	if _, err := sealer(t, "another-secret").OpenToken("k", v, now); err == nil {
		t.Fatal("a value sealed under another secret was accepted")
	}
	flipped := append([]byte(nil), v...)
	flipped[len(flipped)-1] ^= 1
	if _, err := s.OpenToken("k", flipped, now); err == nil {
		t.Fatal("a corrupt value was accepted")
	}
	// Even authentic values may not claim more than WeChat grants.
	long := &credential.Token{Value: "LONG", FetchedAt: now, ExpiresAt: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := s.OpenToken("k", s.SealToken("k", long), now); err == nil {
		t.Fatal("an entry expiring in 2100 was accepted")
	}
	future := credential.NewToken("FUTURE", 7200, now.Add(time.Hour), "fetch")
	if _, err := s.OpenToken("k", s.SealToken("k", future), now); err == nil {
		t.Fatal("an entry fetched an hour from now was accepted")
	}
	if err := func() error { _, err := credential.NewSealer("", "wx"); return err }(); err == nil {
		t.Fatal("sealing without a secret")
	}
}

// Key names are neither the secret nor its unsalted hash.
func TestKeyNameHidesSecret(t *testing.T) {
	a, b := sealer(t, testSecret), sealer(t, "another-secret")
	sum := sha256.Sum256([]byte(testSecret))
	h := hex.EncodeToString(sum[:])
	name := a.KeyName()
	if name == b.KeyName() || strings.Contains(h, name) || strings.Contains(name, testSecret) || name != sealer(t, testSecret).KeyName() {
		t.Fatalf("key name %q: not stable, not distinct, or a plain hash of the secret", name)
	}
}

// A planted plaintext entry with expires_at in 2100 (the old memcache
// format) is a miss, logged once without quoting the value.
func TestPlantedValueIsMissLoggedOnce(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	store := memstore.New()
	sh := credential.NewShared(store.Open(), sealer(t, testSecret), credential.SharedOptions{Logger: zap.New(core)})
	ctx := context.Background()
	planted := "w1 1 4102444800000000000 PLANTED-TOKEN"
	if _, err := store.Open().Add(ctx, sh.Key("access_token"), []byte(planted), time.Hour); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if sh.Load(ctx, "access_token") != nil {
			t.Fatal("adopted a planted value")
		}
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d log lines for an unusable value; want 1", n)
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, "PLANTED") {
				t.Fatal("the log quotes the stored value")
			}
		}
	}
}

func TestAPIErrorClientTextDropsRID(t *testing.T) {
	e := &credential.APIError{Code: 40164, Endpoint: "token", Msg: "invalid ip 1.2.3.4, not in whitelist rid: 6650a1b2-1c2d3e4f-5a6b7c8d"}
	if strings.Contains(e.ClientText(), "rid") || !strings.Contains(e.Error(), "rid: 6650a1b2") {
		t.Fatalf("ClientText %q / Error %q", e.ClientText(), e.Error())
	}
	wrapped := &credential.BackoffError{Err: e, RetryIn: time.Second}
	if strings.Contains(credential.ClientText(wrapped), "rid") {
		t.Fatalf("ClientText of a wrapped error keeps the rid: %q", credential.ClientText(wrapped))
	}
}

// The secret never reaches an error, whatever the endpoint does; the
// token never reaches a ticket error.
func TestSourceErrorsRedacted(t *testing.T) {
	const secret = "SeCrEt+/=with&odd"
	var echo string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/cgi-bin/ticket/getticket":
			echo = r.URL.Query().Get("access_token")
			w.Write([]byte(`{"errcode":40097,"errmsg":"bad token ` + echo + ` rid: abc"}`))
		case "/cgi-bin/get_api_domain_ip":
			w.Write([]byte(`{"errcode":0}`))
		default:
			q := r.URL.Query().Get("secret")
			w.Write([]byte(`{"errcode":40125,"errmsg":"invalid appsecret ` + q + ` rid: 123"}`))
		}
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	dead, _ := url.Parse("http://127.0.0.1:1")
	for _, api := range []string{credential.APIClassic, credential.APIWork, credential.APIStable} {
		src := &credential.AccessTokenSource{RT: http.DefaultTransport, Bases: []*url.URL{dead, base}, AppID: "wx", Secret: secret, API: api}
		_, err := src.Fetch(context.Background(), credential.FetchOptions{})
		if err == nil {
			t.Fatalf("%s: no error", api)
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), url.QueryEscape(secret)) {
			t.Fatalf("%s: error holds the secret: %v", api, err)
		}
	}
	// Ticket errors carry neither the token nor, for clients, the rid.
	src := &credential.AccessTokenSource{RT: http.DefaultTransport, Bases: []*url.URL{base}, AppID: "wx", Secret: secret}
	tokens := credential.New(credential.Config{Source: constSource{"TOKEN-VALUE-123"}})
	defer tokens.Close()
	ts := &credential.TicketSource{Tokens: tokens, Bases: []*url.URL{base}, Type: "jsapi", Redact: src.Redact}
	_, err := ts.Fetch(context.Background(), credential.FetchOptions{})
	if err == nil || echo != "TOKEN-VALUE-123" {
		t.Fatalf("getticket: %v (server saw %q)", err, echo)
	}
	if strings.Contains(err.Error(), "TOKEN-VALUE-123") || strings.Contains(credential.ClientText(err), "rid") {
		t.Fatalf("ticket error leaks: %v", err)
	}
	if ok, err := src.Probe(context.Background(), credential.NewToken("T", 7200, time.Now(), "fetch")); !ok || err != nil {
		t.Fatalf("probe of a valid token: %v %v", ok, err)
	}
}

type constSource struct{ v string }

func (s constSource) Fetch(context.Context, credential.FetchOptions) (*credential.Token, error) {
	return credential.NewToken(s.v, 7200, time.Now(), "fetch"), nil
}

func TestExpiresInClamped(t *testing.T) {
	now := time.Now()
	for in, want := range map[int64]time.Duration{0: 5 * time.Minute, -3: 5 * time.Minute, 7200: 2 * time.Hour, 1 << 62: 2 * time.Hour, 600: 10 * time.Minute} {
		if got := credential.NewToken("x", in, now, "fetch").ExpiresAt.Sub(now); got != want {
			t.Errorf("expires_in %d: %v; want %v", in, got, want)
		}
	}
}

// Auxiliary values (a refresh token WeChat rotates) are sealed in the
// store and survive a new instance.
func TestAuxSealedAndShared(t *testing.T) {
	store := memstore.New()
	open := func() *credential.Cache {
		sh := credential.NewShared(store.Open(), sealer(t, testSecret), credential.SharedOptions{})
		c := credential.New(credential.Config{Name: "authorizer:wxa", Source: constSource{"x"}, Shared: sh})
		t.Cleanup(func() { c.Close() })
		return c
	}
	ctx := context.Background()
	if err := open().Aux().Put(ctx, "refresh_token", []byte("REFRESH-1")); err != nil {
		t.Fatal(err)
	}
	if err := open().Aux().Put(ctx, "refresh_token", []byte("REFRESH-2")); err != nil {
		t.Fatal(err)
	}
	v, err := open().Aux().Get(ctx, "refresh_token")
	if err != nil || string(v) != "REFRESH-2" {
		t.Fatalf("aux = %q, %v", v, err)
	}
}
