package credential_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memstore"
	"github.com/caddy-wechat/wechat/internal/credential/storetest"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// The log contract (events.go, README "Logs"): each credential event is
// one line named by its event field, with its fields under their stable
// keys, and no line at any level (DEBUG here) holds a credential.

const logAppID = "wxlogcontract0001"

// logged is a DEBUG observer and the values no line may hold.
type logged struct {
	logs    *observer.ObservedLogs
	log     *zap.Logger
	secrets []string
}

func newLogged() *logged {
	core, logs := observer.New(zapcore.DebugLevel)
	return &logged{logs: logs, log: zap.New(core), secrets: []string{testSecret}}
}

// one returns the single line of event, after checking its fields:
// want maps a key to its value, or to nil for "present, any value".
func (l *logged) one(t *testing.T, event string, want map[string]any) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, e := range l.logs.All() {
		if m := e.ContextMap(); m[credential.FieldEvent] == event {
			found = append(found, m)
		}
	}
	if len(found) == 0 {
		t.Fatalf("no %q line; lines: %v", event, l.lines())
	}
	m := found[0]
	for k, v := range want {
		got, ok := m[k]
		if !ok {
			t.Errorf("%s: no field %q: %v", event, k, m)
		} else if v != nil && fmt.Sprint(got) != fmt.Sprint(v) {
			t.Errorf("%s: %s = %v, want %v", event, k, got, v)
		}
	}
	return m
}

func (l *logged) lines() []string {
	var out []string
	for _, e := range l.logs.All() {
		out = append(out, fmt.Sprintf("%s %s %v", e.Level, e.Message, e.ContextMap()))
	}
	return out
}

// clean fails on any line that holds one of the secrets, or a value of c.
func (l *logged) clean(t *testing.T, caches ...*credential.Cache) {
	t.Helper()
	needles := append([]string(nil), l.secrets...)
	for _, c := range caches {
		needles = append(needles, c.Recent()...)
	}
	for _, line := range l.lines() {
		for _, n := range needles {
			if n != "" && strings.Contains(line, n) {
				t.Errorf("a log line holds a credential (%.4s...): %s", n, line)
			}
		}
	}
}

func logEnv(t *testing.T, l *logged, api string, shared bool, tweak func(*credential.Config)) *env {
	return newEnv(t, api, shared, func(c *credential.Config) {
		c.AppID, c.Logger = logAppID, l.log
		if tweak != nil {
			tweak(c)
		}
	})
}

func TestLogFetchAndRenewal(t *testing.T) {
	l := newLogged()
	e := logEnv(t, l, credential.APIStable, false, nil)
	tok, err := e.cache.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l.one(t, credential.EventFetch, map[string]any{"appid": logAppID, "credential": "access_token", "source": "fetch",
		"force_refresh": false, "expires_in": 7200})
	e.clock.Advance(tok.ExpiresAt.Sub(e.clock.Now()) - 30*time.Second) // past any renewal point
	e.cache.Tick()
	if e.cache.Current() == tok {
		t.Fatal("no renewal")
	}
	l.one(t, credential.EventRenewal, map[string]any{"appid": logAppID, "credential": "access_token", "source": "fetch", "expires_in": 7200})
	l.clean(t, e.cache)
}

func TestLogFetchFailed(t *testing.T) {
	l := newLogged()
	e := logEnv(t, l, credential.APIStable, false, func(c *credential.Config) {
		c.Source = failingSource{&credential.APIError{Code: 40164, Endpoint: "stable_token", Msg: "invalid ip 203.0.113.9, not in whitelist"}}
	})
	if _, err := e.cache.Token(ctx); err == nil {
		t.Fatal("no error")
	}
	m := l.one(t, credential.EventFetchFailed, map[string]any{"appid": logAppID, "credential": "access_token", "errcode": 40164, "retry_in": nil})
	if !strings.Contains(fmt.Sprint(m["error"]), "203.0.113.9") {
		t.Errorf("the error does not say which IP: %v", m["error"])
	}
	l.clean(t, e.cache)
}

type failingSource struct{ err error }

func (f failingSource) Fetch(context.Context, credential.FetchOptions) (*credential.Token, error) {
	return nil, f.err
}

func TestLogProbeAndRejection(t *testing.T) {
	l := newLogged()
	e := logEnv(t, l, credential.APIStable, false, nil)
	tok, _ := e.cache.Token(ctx)
	e.call(t, true) // the token is fine: a valid verdict, kept
	l.one(t, credential.EventProbe, map[string]any{"verdict": "valid", "appid": logAppID, "credential": "access_token"})
	if n := countEvent(l, credential.EventRejection); n != 0 {
		t.Fatalf("%d rejection lines for a token the probe vouched for", n)
	}
	e.clock.Advance(time.Minute)
	e.fake.Revoke(tok.Value)
	if code := e.call(t, false); code != 0 {
		t.Fatalf("replay: %d", code)
	}
	l.one(t, credential.EventRejection, map[string]any{"appid": logAppID, "credential": "access_token"})
	if countVerdict(l, "invalid") != 1 {
		t.Errorf("no invalid verdict: %v", l.lines())
	}
	l.clean(t, e.cache)
}

func TestLogProbeError(t *testing.T) {
	l := newLogged()
	e := logEnv(t, l, credential.APIStable, false, nil)
	e.cache.SetSource(errProber{e.fake})
	e.cache.Token(ctx)
	e.call(t, true)
	l.one(t, credential.EventProbe, map[string]any{"verdict": "error", "error": nil, "appid": logAppID, "credential": "access_token"})
	l.clean(t, e.cache)
}

// noForce is a stable source whose force_refresh fails.
type noForce struct{ *storetest.Fake }

func (s noForce) Fetch(ctx context.Context, opt credential.FetchOptions) (*credential.Token, error) {
	if opt.Force {
		return nil, &credential.APIError{Code: 45009, Endpoint: "stable_token", Msg: "reach max api daily quota limit"}
	}
	return s.Fake.Fetch(ctx, opt)
}

func TestLogVouchedAndForceRefreshFailed(t *testing.T) {
	l := newLogged()
	e := logEnv(t, l, credential.APIStable, false, nil)
	e.cache.SetSource(noForce{e.fake})
	tok, _ := e.cache.Token(ctx)
	e.clock.Advance(5 * time.Minute)
	e.fake.Break(tok.Value) // rejected by calls, handed back by the endpoint
	for range 120 {
		e.clock.Advance(time.Second)
		e.call(t, false)
		if countEvent(l, credential.EventForceRefreshFailed) > 0 {
			break
		}
	}
	l.one(t, credential.EventVouched, map[string]any{"appid": logAppID, "credential": "access_token"})
	m := l.one(t, credential.EventForceRefreshFailed, map[string]any{"appid": logAppID, "credential": "access_token", "error": nil})
	if !strings.Contains(fmt.Sprint(m["error"]), "45009") {
		t.Errorf("force_refresh_failed error: %v", m["error"])
	}
	l.clean(t, e.cache)
}

func TestLogCeiling(t *testing.T) {
	l := newLogged()
	e := logEnv(t, l, credential.APIClassic, false, func(c *credential.Config) { c.Ceiling = 1; c.MinAge = -1 })
	tok, _ := e.cache.Token(ctx)
	e.fake.Revoke(tok.Value)
	if _, _, err := e.cache.Rejected(ctx, tok); !errors.Is(err, credential.ErrFetchCeiling) {
		t.Fatalf("past the ceiling: %v", err)
	}
	l.one(t, credential.EventCeiling, map[string]any{"appid": logAppID, "credential": "access_token", "ceiling": 1})
	l.one(t, credential.EventFetchFailed, map[string]any{"appid": logAppID, "credential": "access_token"})
	if n := countEvent(l, credential.EventCeiling); n != 1 {
		t.Errorf("%d ceiling lines, want one a day", n)
	}
	e.clock.Advance(10 * time.Minute) // past the backoff
	e.cache.Token(ctx)
	if n := countEvent(l, credential.EventCeiling); n != 1 {
		t.Errorf("%d ceiling lines after a second refusal, want one a day", n)
	}
	l.clean(t, e.cache)
}

func TestLogStoreBreakerAndUnusable(t *testing.T) {
	l := newLogged()
	clock := storetest.NewClock()
	m := memstore.New()
	seal, err := credential.NewSealer(testSecret, "wxunit")
	if err != nil {
		t.Fatal(err)
	}
	sh := credential.NewShared(m.Open(), seal, credential.SharedOptions{Now: clock.Now, Logger: l.log.With(zap.String(credential.FieldAppID, logAppID))})
	// A value this account cannot open, under its key.
	if _, err := m.Open().Add(ctx, sh.Key("access_token"), []byte("not a sealed value"), time.Hour); err != nil {
		t.Fatal(err)
	}
	fake := storetest.NewFake(clock, credential.APIStable)
	c := credential.New(credential.Config{AppID: logAppID, Source: fake, Shared: sh, Now: clock.Now, Logger: l.log})
	t.Cleanup(func() { c.Close() })
	if c.Warm(ctx) {
		t.Fatal("warmed from garbage")
	}
	l.one(t, credential.EventStoreUnusable, map[string]any{"key": sh.Key("access_token"), "reason": nil})
	m.Kill()
	if _, err := c.Token(ctx); err != nil {
		t.Fatalf("a store down must not stop the fetch: %v", err)
	}
	l.one(t, credential.EventStoreBreaker, map[string]any{"state": "open", "op": nil, "error": nil, "retry_in": nil, "appid": logAppID})
	m.Restart()
	clock.Advance(10 * time.Second)
	if err := sh.Do(ctx, "get", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
	closed := 0
	for _, e := range l.logs.All() {
		if cm := e.ContextMap(); cm["event"] == credential.EventStoreBreaker && cm["state"] == "closed" && cm["op"] == "get" {
			closed++
		}
	}
	if closed != 1 {
		t.Errorf("%d breaker-closed lines, want 1: %v", closed, l.lines())
	}
	l.clean(t, c)
}

func TestLogAuthorizerEvents(t *testing.T) {
	e := newOpEnv(t, true)
	l := &logged{logs: e.logs, log: e.log, secrets: []string{compSecret}}
	n := e.node()
	e.push(t, n)
	ids, _ := e.fake.AddAuthorizers(4)
	e.seed(t, n, ids)
	for _, id := range ids {
		l.secrets = append(l.secrets, e.fake.RefreshToken(id))
	}
	// Recovered: the stored refresh token went stale, WeChat gives the current one.
	e.fake.Rotate(ids[0])
	l.secrets = append(l.secrets, e.fake.RefreshToken(ids[0]))
	if _, _, err := n.reg.Token(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	l.one(t, credential.EventRefreshTokenRecovered, map[string]any{"authorizer": ids[0], "errcode": 61023})
	// Lost: WeChat gives none.
	e.fake.InfoGivesRefresh = false
	e.fake.Rotate(ids[1])
	l.secrets = append(l.secrets, e.fake.RefreshToken(ids[1]))
	if _, _, err := n.reg.Token(ctx, ids[1]); err == nil {
		t.Fatal("no error")
	}
	l.one(t, credential.EventRefreshTokenLost, map[string]any{"authorizer": ids[1], "errcode": 61023})
	l.one(t, credential.EventFetchFailed, map[string]any{"appid": ids[1], "credential": "authorizer:" + ids[1], "errcode": 61023})
	// Revoked.
	e.fake.Revoke(ids[2])
	if _, _, err := n.reg.Token(ctx, ids[2]); !errors.Is(err, credential.ErrAuthorizerRevoked) {
		t.Fatalf("61003: %v", err)
	}
	l.one(t, credential.EventAuthorizerRevoked, map[string]any{"authorizer": ids[2], "errcode": 61003})
	// Unsaved: the store refuses a rotated refresh token.
	e.fake.RotateEvery = 1
	a, _ := n.reg.Get(ctx, ids[3])
	e.store.(*memstore.Store).Kill()
	if _, err := a.Cache().Token(ctx); err != nil {
		t.Fatal(err)
	}
	l.secrets = append(l.secrets, e.fake.RefreshToken(ids[3]))
	l.one(t, credential.EventRefreshTokenUnsaved, map[string]any{"authorizer": ids[3], "error": nil})
	e.store.(*memstore.Store).Restart()
	var caches []*credential.Cache
	caches = append(caches, n.comp)
	for _, id := range ids {
		if a := n.reg.Lookup(id); a != nil {
			caches = append(caches, a.Cache())
		}
	}
	l.clean(t, caches...)
}

func countEvent(l *logged, event string) int {
	n := 0
	for _, e := range l.logs.All() {
		if e.ContextMap()[credential.FieldEvent] == event {
			n++
		}
	}
	return n
}

func countVerdict(l *logged, v string) int {
	n := 0
	for _, e := range l.logs.All() {
		if m := e.ContextMap(); m[credential.FieldEvent] == credential.EventProbe && m[credential.FieldVerdict] == v {
			n++
		}
	}
	return n
}

// Every event name of events.go is in the README's table, so the
// contract operators read is the one the code keeps.
func TestLogEventsDocumented(t *testing.T) {
	src, err := os.ReadFile("events.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	ev := regexp.MustCompile(`(?m)^\s+Event\w+\s+= "(\w+)"`).FindAllStringSubmatch(string(src), -1)
	if len(ev) < 15 {
		t.Fatalf("found %d events in events.go", len(ev))
	}
	for _, m := range ev {
		if !strings.Contains(string(readme), "| `"+m[1]+"` |") {
			t.Errorf("event %q is not in the README's log table", m[1])
		}
	}
}
