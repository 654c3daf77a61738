package componentcb_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/componentcb"
	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memstore"
	"github.com/caddy-wechat/wechat/internal/credential/storetest"
	"github.com/caddy-wechat/wechat/internal/wxcrypto"
)

const (
	appid  = "wxcomponent0000001"
	secret = "component-secret-0123456789abcdef"
	token  = "callbacktoken"
	aesKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
)

type env struct {
	clock  *storetest.Clock
	fake   *storetest.OpenPlatform
	st     *memstore.Store
	shared *credential.Shared
	comp   *credential.Cache
	plat   *credential.Platform
	reg    *credential.Registry
	h      *componentcb.Handler
	wx     *wxcrypto.Crypter // WeChat's side
}

func newEnv(t testing.TB) *env {
	clock := storetest.NewClock()
	st := memstore.New()
	st.Now = clock.Now
	return newInstance(t, clock, storetest.NewOpenPlatform(clock, appid, secret), st, nil)
}

// peer is another gateway instance of e's cluster: the same store, fake
// WeChat and clock; its own engine, registry and replay guard. wrap, if
// set, wraps its store client.
func (e *env) peer(t testing.TB, wrap func(credential.Backend) credential.Backend) *env {
	return newInstance(t, e.clock, e.fake, e.st, wrap)
}

func newInstance(t testing.TB, clock *storetest.Clock, fake *storetest.OpenPlatform, st *memstore.Store, wrap func(credential.Backend) credential.Backend) *env {
	e := &env{clock: clock, fake: fake, st: st}
	seal, _ := credential.NewSealer(secret, appid)
	b := st.Open()
	if wrap != nil {
		b = wrap(b)
	}
	shared := credential.NewShared(b, seal, credential.SharedOptions{Now: e.clock.Now, OpTimeout: time.Second})
	e.shared = shared
	base, _ := url.Parse("https://api.weixin.qq.com")
	rt := e.fake.Transport()
	e.comp = credential.New(credential.Config{Name: "component_access_token", Shared: shared, Now: e.clock.Now,
		Source: &credential.ComponentTokenSource{RT: rt, Bases: []*url.URL{base}, AppID: appid, Secret: secret, Now: e.clock.Now}})
	e.plat = &credential.Platform{Component: e.comp, RT: rt, Bases: []*url.URL{base}, AppID: appid, Secret: secret, Now: e.clock.Now}
	e.reg = credential.NewRegistry(e.plat, credential.RegistryConfig{Shared: shared, Now: e.clock.Now})
	var err error
	e.wx, err = wxcrypto.New(token, aesKey, appid)
	if err != nil {
		t.Fatal(err)
	}
	e.h = &componentcb.Handler{Crypter: e.wx, Component: e.comp, Platform: e.plat, Registry: e.reg, Now: e.clock.Now, Shared: shared}
	t.Cleanup(func() { e.reg.Close(); e.comp.Close() })
	return e
}

// push builds WeChat's POST for an event XML, signed and encrypted.
func (e *env) push(xmlMsg string) *http.Request {
	ts := strconv.FormatInt(e.clock.Now().Unix(), 10)
	nonce := strconv.FormatInt(e.clock.Now().UnixNano(), 36)
	body, sig := e.wx.Seal([]byte(xmlMsg), ts, nonce)
	return post(ts, nonce, sig, body)
}

func post(ts, nonce, sig string, body []byte) *http.Request {
	q := url.Values{"timestamp": {ts}, "nonce": {nonce}, "msg_signature": {sig}, "encrypt_type": {"aes"}, "signature": {"x"}}
	return httptest.NewRequest(http.MethodPost, "/wechat/component/callback?"+q.Encode(), bytes.NewReader(body))
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func ticketXML(ticket string) string {
	return "<xml><AppId><![CDATA[" + appid + "]]></AppId><CreateTime>1413192605</CreateTime><InfoType><![CDATA[component_verify_ticket]]></InfoType><ComponentVerifyTicket><![CDATA[" + ticket + "]]></ComponentVerifyTicket></xml>"
}

func authXML(typ, authorizer, code string) string {
	return "<xml><AppId>" + appid + "</AppId><CreateTime>1413192760</CreateTime><InfoType>" + typ + "</InfoType><AuthorizerAppid>" +
		authorizer + "</AuthorizerAppid><AuthorizationCode>" + code + "</AuthorizationCode><AuthorizationCodeExpiredTime>1413193360</AuthorizationCodeExpiredTime></xml>"
}

func (e *env) storedTicket() string {
	v, err := e.comp.Aux().Get(context.Background(), credential.AuxVerifyTicket)
	if err != nil {
		return ""
	}
	return string(v)
}

func TestTicketAuthorizedUnauthorized(t *testing.T) {
	e := newEnv(t)
	ticket := e.fake.PushTicket()
	if w := serve(e.h, e.push(ticketXML(ticket))); w.Code != 200 || w.Body.String() != "success" {
		t.Fatalf("ticket push: %d %q", w.Code, w.Body.String())
	}
	if e.storedTicket() != ticket {
		t.Fatal("ticket not stored")
	}
	if _, err := e.comp.Token(context.Background()); err != nil {
		t.Fatalf("component token: %v", err)
	}
	code := e.fake.AddAuthorizer("wxmerchant000001")
	if w := serve(e.h, e.push(authXML("authorized", "wxmerchant000001", code))); w.Code != 200 {
		t.Fatalf("authorized: %d %s", w.Code, w.Body.String())
	}
	tok, _, err := e.reg.Token(context.Background(), "wxmerchant000001")
	if err != nil || !e.fake.Valid(tok.Value) || e.fake.AuthorizerFetches.Load() != 0 {
		t.Fatalf("authorizer token after authorized: %v", err)
	}
	code = e.fake.AddAuthorizer("wxmerchant000001") // updateauthorized: new refresh token
	if w := serve(e.h, e.push(authXML("updateauthorized", "wxmerchant000001", code))); w.Code != 200 {
		t.Fatalf("updateauthorized: %d %s", w.Code, w.Body.String())
	}
	a := e.reg.Lookup("wxmerchant000001")
	if v, _ := a.Cache().Aux().Get(context.Background(), credential.AuxRefreshToken); string(v) != e.fake.RefreshToken("wxmerchant000001") {
		t.Fatal("updateauthorized did not store the new refresh token")
	}
	if w := serve(e.h, e.push(authXML("unauthorized", "wxmerchant000001", ""))); w.Code != 200 {
		t.Fatalf("unauthorized: %d %s", w.Code, w.Body.String())
	}
	if _, err := e.reg.Get(context.Background(), "wxmerchant000001"); !errors.Is(err, credential.ErrUnknownAuthorizer) {
		t.Fatalf("after unauthorized: %v", err)
	}
}

// Every bad push gets a clear 4xx and changes nothing.
func TestBadPushesChangeNothing(t *testing.T) {
	e := newEnv(t)
	good := e.fake.PushTicket()
	if w := serve(e.h, e.push(ticketXML(good))); w.Code != 200 {
		t.Fatal(w.Code)
	}
	ts := strconv.FormatInt(e.clock.Now().Unix(), 10)
	other, _ := wxcrypto.New(token, aesKey, "wxsomeoneelse00001")
	otherKey, _ := wxcrypto.New(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg", appid)
	forged := ticketXML("FORGED")

	// A valid signature over a ciphertext with broken padding.
	ct, _ := base64.StdEncoding.DecodeString(e.wx.Encrypt([]byte(forged)))
	ct[len(ct)-1] ^= 0x55
	badPad := base64.StdEncoding.EncodeToString(ct)

	replayed := e.push(ticketXML(e.fake.PushTicket()))
	replayBody, _ := httpBody(replayed)
	if w := serve(e.h, clone(replayed, replayBody)); w.Code != 200 {
		t.Fatal("first delivery of the replayed push", w.Code)
	}
	good = e.storedTicket()

	cases := []struct {
		name   string
		req    *http.Request
		status int
		reason string
	}{
		{"bad signature", func() *http.Request {
			body, _ := e.wx.Seal([]byte(forged), ts, "n1")
			return post(ts, "n1", strings.Repeat("0", 40), body)
		}(), 403, "msg_signature"},
		{"signed by another token", func() *http.Request {
			body, _ := e.wx.Seal([]byte(forged), ts, "n2")
			return post(ts, "n2", wxcrypto.Signature("other", ts, "n2", envEncrypt(t, body)), body)
		}(), 403, "msg_signature"},
		{"bad padding", post(ts, "n3", e.wx.Signature(ts, "n3", badPad), wxcrypto.BuildEnvelope(appid, badPad)), 400, "decryption failed"},
		{"other key", func() *http.Request {
			body, _ := otherKey.Seal([]byte(forged), ts, "n4")
			return post(ts, "n4", e.wx.Signature(ts, "n4", envEncrypt(t, body)), body)
		}(), 400, "decryption failed"},
		{"wrong appid in the ciphertext", func() *http.Request {
			body, sig := other.Seal([]byte(forged), ts, "n5")
			return post(ts, "n5", sig, body)
		}(), 403, "another appid"},
		{"wrong AppId in the event", func() *http.Request {
			body, sig := e.wx.Seal([]byte(strings.Replace(forged, appid, "wxsomeoneelse00001", 1)), ts, "n6")
			return post(ts, "n6", sig, body)
		}(), 403, "another component"},
		{"replay", clone(replayed, replayBody), 409, "already received"},
		{"stale timestamp", func() *http.Request {
			old := strconv.FormatInt(e.clock.Now().Add(-time.Hour).Unix(), 10)
			body, sig := e.wx.Seal([]byte(forged), old, "n7")
			return post(old, "n7", sig, body)
		}(), 400, "timestamp"},
		{"future timestamp", func() *http.Request {
			f := strconv.FormatInt(e.clock.Now().Add(time.Hour).Unix(), 10)
			body, sig := e.wx.Seal([]byte(forged), f, "n8")
			return post(f, "n8", sig, body)
		}(), 400, "timestamp"},
		{"oversized", post(ts, "n9", "x", bytes.Repeat([]byte("a"), componentcb.DefaultMaxBody+1)), 413, "too large"},
		{"missing params", httptest.NewRequest(http.MethodPost, "/cb", strings.NewReader("<xml/>")), 400, "required"},
		{"GET", httptest.NewRequest(http.MethodGet, "/cb", nil), 405, "POST"},
		{"not an envelope", post(ts, "n10", "x", []byte("hello")), 400, "envelope"},
	}
	for _, c := range cases {
		w := serve(e.h, c.req)
		if w.Code != c.status || !strings.Contains(w.Body.String(), c.reason) || w.Header().Get("X-Wechat-Gateway") != "error" {
			t.Errorf("%s: %d %q, want %d with %q", c.name, w.Code, w.Body.String(), c.status, c.reason)
		}
		if strings.Contains(w.Body.String(), "FORGED") || strings.Contains(w.Body.String(), token) {
			t.Errorf("%s: the answer quotes the push or the token", c.name)
		}
		if e.storedTicket() != good {
			t.Fatalf("%s changed the stored ticket", c.name)
		}
	}
}

func envEncrypt(t *testing.T, body []byte) string {
	env, err := wxcrypto.ParseEnvelope(body)
	if err != nil {
		t.Fatal(err)
	}
	return env.Encrypt
}

func httpBody(r *http.Request) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(r.Body)
	return b.Bytes(), err
}

func clone(r *http.Request, body []byte) *http.Request {
	c := r.Clone(r.Context())
	c.Body = httpNopCloser{bytes.NewReader(body)}
	return c
}

type httpNopCloser struct{ *bytes.Reader }

func (httpNopCloser) Close() error { return nil }

// A push that cannot be stored is not acknowledged and not remembered, so
// WeChat's retry goes through.
func TestStoreFailureNotAcknowledgedRetryAccepted(t *testing.T) {
	e := newEnv(t)
	code := e.fake.AddAuthorizer("wxmerchant000009")
	req := e.push(authXML("authorized", "wxmerchant000009", code))
	body, _ := httpBody(req)
	// No ticket yet: api_query_auth cannot run.
	if w := serve(e.h, clone(req, body)); w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "component_verify_ticket") {
		t.Fatalf("authorized without a ticket: %d %s", w.Code, w.Body.String())
	}
	if w := serve(e.h, e.push(ticketXML(e.fake.PushTicket()))); w.Code != 200 {
		t.Fatal(w.Code)
	}
	if w := serve(e.h, clone(req, body)); w.Code != 200 {
		t.Fatalf("WeChat's retry: %d %s", w.Code, w.Body.String())
	}
}

// FuzzCallback drives the parse path with arbitrary parameters and bodies;
// with sign set, the body's Encrypt (if any) is signed correctly, so the
// fuzzer reaches decryption and the event parser. No input may panic, and
// a push the fuzzer could not sign never changes the stored ticket.
func FuzzCallback(f *testing.F) {
	e := newEnv(f)
	ts := strconv.FormatInt(e.clock.Now().Unix(), 10)
	body, sig := e.wx.Seal([]byte(ticketXML("T1")), ts, "n")
	f.Add(ts, "n", sig, body, false)
	f.Add(ts, "n", "", body, true)
	f.Add(ts, "n", "", wxcrypto.BuildEnvelope(appid, e.wx.Encrypt([]byte("<xml><AppId>"+appid+"</AppId><InfoType>authorized</InfoType></xml>"))), true)
	f.Add(ts, "n", "", wxcrypto.BuildEnvelope(appid, e.wx.Encrypt([]byte("not xml"))), true)
	f.Add(ts, "n", "", wxcrypto.BuildEnvelope(appid, "AAAA"), true)
	f.Add("x", "", "", []byte("<xml><Encrypt>"), false)
	f.Fuzz(func(t *testing.T, ts, nonce, sig string, body []byte, sign bool) {
		before := e.storedTicket()
		if sign {
			if env, err := wxcrypto.ParseEnvelope(body); err == nil {
				sig = e.wx.Signature(ts, nonce, env.Encrypt)
			}
		}
		q := url.Values{"timestamp": {ts}, "nonce": {nonce}, "msg_signature": {sig}}
		r := httptest.NewRequest(http.MethodPost, "/cb?"+q.Encode(), bytes.NewReader(body))
		w := serve(e.h, r)
		if w.Code != 200 && w.Code < 400 {
			t.Fatalf("status %d", w.Code)
		}
		if !sign && w.Code == 200 && e.storedTicket() != before && sig != e.wx.Signature(ts, nonce, envEncryptOr(body)) {
			t.Fatal("an unsigned push changed the ticket")
		}
	})
}

func envEncryptOr(body []byte) string {
	env, err := wxcrypto.ParseEnvelope(body)
	if err != nil {
		return ""
	}
	return env.Encrypt
}

// A config reload builds a new handler; a shared guard keeps the replay
// window closed across it.
func TestReplayGuardSurvivesReload(t *testing.T) {
	e := newEnv(t)
	g := new(componentcb.ReplayGuard)
	e.h.Guard = g
	req := e.push(ticketXML(e.fake.PushTicket()))
	body, _ := httpBody(req)
	if w := serve(e.h, clone(req, body)); w.Code != 200 {
		t.Fatal(w.Code)
	}
	reloaded := &componentcb.Handler{Crypter: e.wx, Component: e.comp, Platform: e.plat, Registry: e.reg, Now: e.clock.Now, Guard: g}
	if w := serve(reloaded, clone(req, body)); w.Code != http.StatusConflict {
		t.Fatalf("replay after reload: %d", w.Code)
	}
}
