package componentcb_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
)

// events records callback outcomes as "info_type/result".
type events struct {
	mu  sync.Mutex
	got []string
}

func (ev *events) Callback(infoType, result string) {
	ev.mu.Lock()
	ev.got = append(ev.got, infoType+"/"+result)
	ev.mu.Unlock()
}

func (ev *events) last() string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if len(ev.got) == 0 {
		return ""
	}
	return ev.got[len(ev.got)-1]
}

// captured is a push as an attacker on the wire keeps it: sent once,
// replayable at will.
type captured struct {
	req  *http.Request
	body []byte
}

func capture(r *http.Request) captured {
	body, _ := httpBody(r)
	return captured{r, body}
}

func (c captured) to(h http.Handler) int { return serve(h, clone(c.req, c.body)).Code }

func mustServe(t *testing.T, h http.Handler, r *http.Request, what string) {
	t.Helper()
	if w := serve(h, r); w.Code != 200 || w.Body.String() != "success" {
		t.Fatalf("%s: %d %s", what, w.Code, w.Body.String())
	}
}

// known reports whether the cluster knows the authorizer with WeChat's
// current refresh token, as a fresh instance would find it.
func known(t *testing.T, e *env, merchant string) bool {
	t.Helper()
	fresh := e.peer(t, nil)
	a, err := fresh.reg.Get(context.Background(), merchant)
	if errors.Is(err, credential.ErrUnknownAuthorizer) {
		return false
	}
	if err != nil {
		t.Fatalf("looking up %s: %v", merchant, err)
	}
	v, err := a.Cache().Aux().Get(context.Background(), credential.AuxRefreshToken)
	return err == nil && string(v) == e.fake.RefreshToken(merchant)
}

// authorizeThenRevoke authorizes merchant through a, and returns the
// unauthorized push a received after the merchant revoked the platform:
// the push an attacker replays once the merchant has authorized again.
func authorizeThenRevoke(t *testing.T, a *env, merchant string) captured {
	t.Helper()
	mustServe(t, a.h, a.push(ticketXML(a.fake.PushTicket())), "ticket")
	mustServe(t, a.h, a.push(authXML("authorized", merchant, a.fake.AddAuthorizer(merchant))), "authorized")
	unauth := capture(a.push(authXML("unauthorized", merchant, "")))
	a.fake.Revoke(merchant)
	if c := unauth.to(a.h); c != 200 {
		t.Fatalf("unauthorized: %d", c)
	}
	if known(t, a, merchant) {
		t.Fatal("unauthorized did not forget the authorizer")
	}
	return unauth
}

// A push accepted by one instance is refused by another (409, "replay")
// and changes nothing there: an old ticket does not overwrite the new
// one, and an unauthorized replayed after the merchant authorized again
// does not forget the authorizer.
func TestReplayToAnotherInstanceRefused(t *testing.T) {
	a := newEnv(t)
	b := a.peer(t, nil)
	evB := &events{}
	b.h.Events = evB

	old := capture(a.push(ticketXML(a.fake.PushTicket())))
	if c := old.to(a.h); c != 200 {
		t.Fatalf("ticket: %d", c)
	}
	newer := a.fake.PushTicket()
	mustServe(t, a.h, a.push(ticketXML(newer)), "newer ticket")
	w := serve(b.h, clone(old.req, old.body))
	if w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), "already received") || evB.last() != "/replay" {
		t.Fatalf("old ticket replayed to another instance: %d %q, event %q; want 409 replay", w.Code, w.Body.String(), evB.last())
	}
	if b.storedTicket() != newer || a.storedTicket() != newer {
		t.Fatal("a replayed ticket changed the stored one")
	}

	const merchant = "wxmerchant000021"
	unauth := authorizeThenRevoke(t, a, merchant)
	// The merchant authorizes again, through the other instance.
	mustServe(t, b.h, b.push(authXML("authorized", merchant, b.fake.AddAuthorizer(merchant))), "authorized again")
	if !known(t, a, merchant) || b.reg.Lookup(merchant) == nil {
		t.Fatal("authorization again not stored")
	}
	w = serve(b.h, clone(unauth.req, unauth.body))
	if w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), "already received") || evB.last() != "/replay" {
		t.Fatalf("unauthorized replayed to another instance: %d %q, event %q; want 409 replay", w.Code, w.Body.String(), evB.last())
	}
	if c := unauth.to(a.h); c != http.StatusConflict {
		t.Fatalf("unauthorized replayed to its own instance: %d", c)
	}
	if !known(t, a, merchant) || b.reg.Lookup(merchant) == nil {
		t.Fatal("a replayed unauthorized forgot the authorizer")
	}
	if _, _, err := b.reg.Token(context.Background(), merchant); err != nil {
		t.Fatalf("the authorizer's token after the replay: %v", err)
	}
}

// A push that could not be stored is forgotten by both guards: WeChat's
// retry is accepted on another instance, and from then on refused on
// the first one too.
func TestReleaseLiftsTheClusterMark(t *testing.T) {
	a := newEnv(t)
	b := a.peer(t, nil)
	const merchant = "wxmerchant000022"
	p := capture(a.push(authXML("authorized", merchant, a.fake.AddAuthorizer(merchant))))
	// No ticket yet: api_query_auth fails, the push is not acknowledged.
	if c := p.to(a.h); c != http.StatusBadGateway {
		t.Fatalf("authorized without a ticket: %d", c)
	}
	mustServe(t, a.h, a.push(ticketXML(a.fake.PushTicket())), "ticket")
	if w := serve(b.h, clone(p.req, p.body)); w.Code != 200 {
		t.Fatalf("WeChat's retry on another instance: %d %s", w.Code, w.Body.String())
	}
	if !known(t, a, merchant) {
		t.Fatal("the retried authorization was not stored")
	}
	if c := p.to(a.h); c != http.StatusConflict {
		t.Fatalf("the push again at the first instance, after another stored it: %d; want 409", c)
	}
}

// With the store down the cluster guard cannot tell a replay from a new
// push, so every signed push gets a 503 (WeChat pushes again) and changes
// nothing, not even on this instance; once the store is back, replays are
// refused and WeChat's retries go through.
func TestStoreDownPushRefusedChangesNothing(t *testing.T) {
	a := newEnv(t)
	b := a.peer(t, nil)
	evB := &events{}
	b.h.Events = evB
	const merchant = "wxmerchant000023"
	unauth := authorizeThenRevoke(t, a, merchant)
	mustServe(t, a.h, a.push(authXML("authorized", merchant, a.fake.AddAuthorizer(merchant))), "authorized again")
	if _, err := b.reg.Get(context.Background(), merchant); err != nil {
		t.Fatal(err)
	}
	ticketBefore := b.storedTicket()

	a.st.Kill()
	w := serve(b.h, clone(unauth.req, unauth.body))
	if b.reg.Lookup(merchant) == nil {
		t.Fatal("a replay with the store down dropped the authorizer on this instance")
	}
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "push again") || evB.last() != "/store_failed" {
		t.Fatalf("unauthorized replayed with the store down: %d %q, event %q; want 503 store_failed", w.Code, w.Body.String(), evB.last())
	}
	newTicket := a.fake.PushTicket()
	fresh := capture(b.push(ticketXML(newTicket)))
	if c := fresh.to(b.h); c != http.StatusServiceUnavailable {
		t.Fatalf("a new push with the store down: %d; want 503", c)
	}

	a.st.Restart()
	a.clock.Advance(6 * time.Second) // past the breaker's cool-off
	if c := unauth.to(b.h); c != http.StatusConflict {
		t.Fatalf("unauthorized replayed once the store is back: %d; want 409", c)
	}
	if !known(t, a, merchant) || b.reg.Lookup(merchant) == nil {
		t.Fatal("a replayed unauthorized forgot the authorizer")
	}
	if b.storedTicket() != ticketBefore {
		t.Fatal("a push refused with the store down changed the ticket")
	}
	if w := serve(b.h, clone(fresh.req, fresh.body)); w.Code != 200 {
		t.Fatalf("WeChat's retry of the new push: %d %s", w.Code, w.Body.String())
	}
	if b.storedTicket() != newTicket {
		t.Fatal("the retried ticket was not stored")
	}
}

// An instance that refused a push because a peer held it accepts
// WeChat's retry once the peer gave the push up: the refusal leaves no
// mark in its own guard.
func TestRetryAcceptedAfterPeerGaveUp(t *testing.T) {
	a := newEnv(t)
	b := a.peer(t, nil)
	p := capture(a.push(ticketXML(a.fake.PushTicket())))
	// a has taken the push and is still storing it.
	_, release, err := a.h.Parse(clone(p.req, p.body))
	if err != nil {
		t.Fatal(err)
	}
	if c := p.to(b.h); c != http.StatusConflict {
		t.Fatalf("the push at b while a holds it: %d; want 409", c)
	}
	release() // a could not store it
	if w := serve(b.h, clone(p.req, p.body)); w.Code != 200 {
		t.Fatalf("WeChat's retry at b: %d %s", w.Code, w.Body.String())
	}
}

// landFail makes the first Add of a mark land and then fail, as one that
// times out after the server applied it.
type landFail struct {
	credential.Backend
	once sync.Once
}

func (l *landFail) Add(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	ok, err := l.Backend.Add(ctx, key, v, ttl)
	if strings.Contains(key, ":once:") {
		failed := false
		l.once.Do(func() { failed = true })
		if failed {
			return false, errors.New("i/o timeout")
		}
	}
	return ok, err
}

// A mark whose Add failed may have landed anyway: it is lifted with the
// 503, so WeChat's retry is accepted on any instance.
func TestLandedMarkLiftedWithThe503(t *testing.T) {
	a := newEnv(t)
	b := a.peer(t, func(be credential.Backend) credential.Backend { return &landFail{Backend: be} })
	ticket := a.fake.PushTicket()
	p := capture(b.push(ticketXML(ticket)))
	if c := p.to(b.h); c != http.StatusServiceUnavailable {
		t.Fatalf("push whose mark timed out: %d; want 503", c)
	}
	if w := serve(a.h, clone(p.req, p.body)); w.Code != 200 {
		t.Fatalf("WeChat's retry on another instance: %d %s", w.Code, w.Body.String())
	}
	if a.storedTicket() != ticket {
		t.Fatal("the retried ticket was not stored")
	}
}
