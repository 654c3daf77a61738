// Package componentcb serves the open platform's 授权事件接收URL: it takes
// WeChat's encrypted pushes (component_verify_ticket every 10 minutes,
// authorized, updateauthorized, unauthorized) and stores what they carry
// through the credential engine. It imports nothing from Caddy; the
// wechat_component_callback module is a thin layer over it.
//
// Anything that is not a fresh, correctly signed, correctly encrypted push
// for this component gets a 4xx and changes nothing.
package componentcb

import (
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/wxcrypto"
	"go.uber.org/zap"
)

// Defaults of a Handler.
const (
	DefaultMaxBody = 64 << 10 // a real push is under 2 KiB
	DefaultMaxSkew = 5 * time.Minute
	// replayMax bounds the replay guard; only correctly signed pushes
	// enter it, so only someone holding the token can fill it.
	replayMax      = 10000
	processTimeout = 15 * time.Second
	// clusterMargin lengthens a push's mark in the store beyond twice
	// the skew: each instance judges a timestamp by its own clock, and
	// clocks in a cluster differ a little.
	clusterMargin = time.Minute
)

// Handler is one component's callback.
type Handler struct {
	Crypter   *wxcrypto.Crypter
	Component *credential.Cache // the ticket goes into its Aux
	Platform  *credential.Platform
	Registry  *credential.Registry
	Now       func() time.Time
	MaxBody   int64         // 0: DefaultMaxBody
	MaxSkew   time.Duration // how far timestamp may be from now; 0: DefaultMaxSkew
	Logger    *zap.Logger
	Events    Events
	// Guard remembers signed pushes; share one across config reloads so
	// a reload does not reopen the replay window. nil: the handler's own.
	Guard *ReplayGuard
	// Shared is the component's store (the one Component and Registry
	// write to): a push is also remembered there, so that a push
	// captured at one instance cannot be replayed to another. nil: this
	// process only, with Guard alone.
	Shared *credential.Shared

	own ReplayGuard
}

// ReplayGuard remembers the pushes already received. Marks all live
// twice the skew, so insertion order is expiry order: a FIFO beside the
// map evicts the oldest in O(1), however full the guard is.
type ReplayGuard struct {
	mu    sync.Mutex
	seen  map[string]time.Time
	fifo  []mark // ring of the marks in insertion order, at most replayMax
	head  int    // index of the oldest mark in fifo
	n     int    // marks in fifo, stale ones (forgotten, re-marked) included
	steps int    // ring slots examined, for the test of the bound
}

type mark struct {
	key   string
	until time.Time
}

func (h *Handler) guard() *ReplayGuard {
	if h.Guard != nil {
		return h.Guard
	}
	return &h.own
}

// Events counts callback outcomes for metrics: bounded labels only.
type Events interface {
	Callback(infoType, result string)
}

// Result labels, also the reasons of rejections.
const (
	ResultOK           = "ok"
	ResultMethod       = "method"
	ResultParams       = "params"
	ResultStale        = "stale_timestamp"
	ResultTooLarge     = "too_large"
	ResultEnvelope     = "envelope"
	ResultSignature    = "signature"
	ResultReplay       = "replay"
	ResultDecrypt      = "decrypt"
	ResultAppID        = "appid"
	ResultMessage      = "message"
	ResultStoreFailed  = "store_failed"
	ResultQueryFailed  = "query_auth_failed"
	ResultIgnoredEvent = "ignored"
)

// Message is a decrypted open-platform event.
type Message struct {
	AppID        string `xml:"AppId"`
	CreateTime   int64  `xml:"CreateTime"`
	InfoType     string `xml:"InfoType"`
	Ticket       string `xml:"ComponentVerifyTicket"`
	Authorizer   string `xml:"AuthorizerAppid"`
	AuthCode     string `xml:"AuthorizationCode"`
	AuthCodeTill int64  `xml:"AuthorizationCodeExpiredTime"`
}

// Reject is a refused push: its status and a clear reason, never quoting
// what was sent.
type Reject struct {
	Status int
	Result string
	Msg    string
}

func (r *Reject) Error() string { return r.Msg }

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Handler) log() *zap.Logger {
	if h.Logger == nil {
		return zap.NewNop()
	}
	return h.Logger
}

// ServeHTTP answers "success" to a push it has stored, else a 4xx (bad
// push) or a 5xx (the push is fine but could not be stored: WeChat pushes
// again).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	infoType, err := h.Handle(r)
	result := ResultOK
	if err != nil {
		var rj *Reject
		if !errors.As(err, &rj) {
			rj = &Reject{http.StatusInternalServerError, "error", "internal error"}
		}
		result = rj.Result
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Wechat-Gateway", "error")
		w.WriteHeader(rj.Status)
		_, _ = io.WriteString(w, "caddy-wechat component callback: "+rj.Msg+"\n")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "success")
	}
	if h.Events != nil {
		h.Events.Callback(boundInfoType(infoType), result)
	}
}

func boundInfoType(s string) string {
	switch s {
	case "component_verify_ticket", "authorized", "updateauthorized", "unauthorized", "":
		return s
	}
	return "other"
}

// Parse checks a push (method, parameters, freshness, size, signature,
// replay, padding, appid) and returns its message. It changes nothing but
// the replay guards (this process's, and the cluster's in Shared), and
// only for a correctly signed push; the returned release undoes both, for
// a push that could not be stored.
func (h *Handler) Parse(r *http.Request) (msg *Message, release func(), err error) {
	if r.Method != http.MethodPost {
		return nil, nil, &Reject{http.StatusMethodNotAllowed, ResultMethod, "POST only"}
	}
	q := r.URL.Query()
	ts, nonce, sig := q.Get("timestamp"), q.Get("nonce"), q.Get("msg_signature")
	if ts == "" || nonce == "" || sig == "" || len(nonce) > 64 || len(sig) > 64 {
		return nil, nil, &Reject{http.StatusBadRequest, ResultParams, "timestamp, nonce and msg_signature are required"}
	}
	if et := q.Get("encrypt_type"); et != "" && et != "aes" {
		return nil, nil, &Reject{http.StatusBadRequest, ResultParams, "only encrypt_type=aes is supported"}
	}
	sec, perr := strconv.ParseInt(ts, 10, 64)
	if perr != nil {
		return nil, nil, &Reject{http.StatusBadRequest, ResultParams, "timestamp is not a number"}
	}
	skew := h.MaxSkew
	if skew <= 0 {
		skew = DefaultMaxSkew
	}
	now := h.now()
	if d := now.Sub(time.Unix(sec, 0)); d > skew || d < -skew {
		return nil, nil, &Reject{http.StatusBadRequest, ResultStale, "timestamp too far from now (a replay, or a clock off by more than " + skew.String() + ")"}
	}
	limit := h.MaxBody
	if limit <= 0 {
		limit = DefaultMaxBody
	}
	if r.ContentLength > limit {
		return nil, nil, &Reject{http.StatusRequestEntityTooLarge, ResultTooLarge, "body too large"}
	}
	body, rerr := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if rerr != nil {
		return nil, nil, &Reject{http.StatusBadRequest, ResultEnvelope, "reading the body failed"}
	}
	if int64(len(body)) > limit {
		return nil, nil, &Reject{http.StatusRequestEntityTooLarge, ResultTooLarge, "body too large"}
	}
	env, eerr := wxcrypto.ParseEnvelope(body)
	if eerr != nil {
		return nil, nil, &Reject{http.StatusBadRequest, ResultEnvelope, "body is not an <xml><Encrypt> envelope"}
	}
	if !h.Crypter.Verify(sig, ts, nonce, env.Encrypt) {
		return nil, nil, &Reject{http.StatusForbidden, ResultSignature, "msg_signature does not match"}
	}
	// The mark's key is canonical: Verify accepts msg_signature in any
	// letter case, so an upper-cased copy of a captured push is the same
	// push, on this instance and on every peer sharing the store.
	key := replayKey(ts, nonce, sig)
	// This process's guard first: it costs no store call, and it still
	// holds when the handler has no store.
	g := h.guard()
	if !g.remember(key, now, skew) {
		return nil, nil, &Reject{http.StatusConflict, ResultReplay, "this push was already received (same timestamp, nonce and signature)"}
	}
	unmark := func() { g.forget(key) }
	plain, derr := h.Crypter.Decrypt(env.Encrypt)
	if derr != nil {
		unmark()
		if errors.Is(derr, wxcrypto.ErrAppID) {
			return nil, nil, &Reject{http.StatusForbidden, ResultAppID, "the message is for another appid"}
		}
		return nil, nil, &Reject{http.StatusBadRequest, ResultDecrypt, "decryption failed (" + derr.Error() + ")"}
	}
	var m Message
	if xerr := xml.Unmarshal(plain, &m); xerr != nil || m.InfoType == "" {
		unmark()
		return nil, nil, &Reject{http.StatusBadRequest, ResultMessage, "the decrypted message is not an open-platform event"}
	}
	if m.AppID != h.Crypter.AppID() {
		unmark()
		return nil, nil, &Reject{http.StatusForbidden, ResultAppID, "the event is for another component appid"}
	}
	if h.Shared == nil {
		return &m, unmark, nil
	}
	// The cluster-wide guard, last, so that only a push that would be
	// applied reaches the store. If the store cannot say whether another
	// instance took the push, it is refused with a 503 and WeChat pushes
	// it again: every event's effect is a store write anyway, and a
	// replayed unauthorized must never forget an authorizer, not even on
	// one instance while the store is down.
	sctx := context.WithoutCancel(r.Context())
	claim, first, serr := h.Shared.Remember(sctx, "push\x00"+key, 2*skew+clusterMargin)
	if serr != nil {
		unmark()
		h.forgetShared(sctx, key, claim) // the Add may have landed
		h.log().Warn("the cluster replay guard cannot reach the store; answering 503 so WeChat pushes again",
			zap.String("info_type", boundInfoType(m.InfoType)), zap.String("error", serr.Error()))
		return nil, nil, &Reject{http.StatusServiceUnavailable, ResultStoreFailed, "the store could not tell whether this push was already received; push again"}
	}
	if !first {
		// Another instance holds the push. Forget it here: if that
		// instance fails to store it and lifts its mark, WeChat's retry
		// may come to this one.
		unmark()
		return nil, nil, &Reject{http.StatusConflict, ResultReplay, "this push was already received (same timestamp, nonce and signature)"}
	}
	return &m, func() { unmark(); h.forgetShared(sctx, key, claim) }, nil
}

// forgetShared lifts the push's mark in the store, if this call made it.
func (h *Handler) forgetShared(ctx context.Context, key, claim string) {
	if claim == "" {
		return
	}
	if err := h.Shared.Forget(ctx, "push\x00"+key, claim); err != nil {
		h.log().Warn("lifting a push's mark in the store failed; WeChat's retry of it is refused as a replay until the mark expires",
			zap.String("error", err.Error()))
	}
}

// Handle parses a push and stores what it carries.
func (h *Handler) Handle(r *http.Request) (infoType string, err error) {
	m, release, err := h.Parse(r)
	if err != nil {
		return "", err
	}
	// Detached from the client: WeChat hangs up after 5 s, and a store
	// write half done must still finish.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), processTimeout)
	defer cancel()
	if err := h.apply(ctx, m); err != nil {
		release() // let WeChat's retry through
		return m.InfoType, err
	}
	return m.InfoType, nil
}

func (h *Handler) apply(ctx context.Context, m *Message) error {
	switch m.InfoType {
	case "component_verify_ticket":
		if m.Ticket == "" || len(m.Ticket) > 512 {
			return &Reject{http.StatusBadRequest, ResultMessage, "component_verify_ticket event without a ticket"}
		}
		if err := h.Component.Aux().Put(ctx, credential.AuxVerifyTicket, []byte(m.Ticket)); err != nil {
			h.log().Error("storing the component_verify_ticket failed; answering 503 so WeChat pushes it again", zap.String("error", err.Error()))
			return &Reject{http.StatusServiceUnavailable, ResultStoreFailed, "the ticket could not be stored durably"}
		}
		h.Component.ClearBackoff()
		h.log().Debug("component_verify_ticket stored")
	case "authorized", "updateauthorized":
		if !credential.ValidAppID(m.Authorizer) || m.AuthCode == "" {
			return &Reject{http.StatusBadRequest, ResultMessage, m.InfoType + " event without AuthorizerAppid or AuthorizationCode"}
		}
		au, err := h.Platform.QueryAuth(ctx, m.AuthCode)
		if err != nil {
			h.log().Error("api_query_auth failed; answering 502 so WeChat pushes the event again",
				zap.String("authorizer", m.Authorizer), zap.String("error", credential.ClientText(err)))
			return &Reject{http.StatusBadGateway, ResultQueryFailed, "api_query_auth failed: " + credential.ClientText(err)}
		}
		if au.AuthorizerAppID != m.Authorizer {
			return &Reject{http.StatusBadRequest, ResultMessage, "api_query_auth answered for another authorizer"}
		}
		if err := h.Registry.Authorize(ctx, au); err != nil {
			h.log().Error("storing an authorizer's refresh token failed; answering 503 so WeChat pushes the event again",
				zap.String("authorizer", m.Authorizer), zap.String("error", err.Error()))
			return &Reject{http.StatusServiceUnavailable, ResultStoreFailed, "the refresh token could not be stored durably"}
		}
		h.log().Info("authorizer authorized", zap.String("authorizer", m.Authorizer), zap.String("event", m.InfoType))
	case "unauthorized":
		if !credential.ValidAppID(m.Authorizer) {
			return &Reject{http.StatusBadRequest, ResultMessage, "unauthorized event without AuthorizerAppid"}
		}
		if err := h.Registry.Forget(ctx, m.Authorizer, "unauthorized"); err != nil {
			return &Reject{http.StatusServiceUnavailable, ResultStoreFailed, "the authorizer could not be forgotten durably"}
		}
		h.log().Info("authorizer revoked the platform; forgotten", zap.String("authorizer", m.Authorizer))
	default:
		h.log().Debug("open-platform event ignored", zap.String("info_type", boundInfoType(m.InfoType)))
	}
	return nil
}

// replayKey names a push in both guards by what its signature covers
// and the signature in canonical (lower-case hex) form.
func replayKey(ts, nonce, sig string) string {
	return ts + "\x00" + nonce + "\x00" + strings.ToLower(sig)
}

// remember records a signed push, and reports false if it was seen within
// twice the skew (after which its timestamp is refused anyway). It costs
// O(1) amortised: expired marks leave from the front of the FIFO, and a
// full guard drops its oldest mark.
func (g *ReplayGuard) remember(key string, now time.Time, skew time.Duration) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen == nil {
		g.seen = map[string]time.Time{}
	}
	if until, ok := g.seen[key]; ok && now.Before(until) {
		return false
	}
	for g.n > 0 && !now.Before(g.fifo[g.head].until) {
		g.pop()
	}
	if g.n == replayMax {
		g.pop()
	}
	m := mark{key, now.Add(2 * skew)}
	switch {
	case len(g.fifo) == replayMax:
		g.fifo[(g.head+g.n)%replayMax] = m // full size: a ring
	case g.head > 0 && g.head >= g.n:
		// Growing, and at least as many dropped marks before head as live
		// ones after it: move the live ones down (amortised O(1)).
		g.steps += copy(g.fifo, g.fifo[g.head:g.head+g.n])
		clear(g.fifo[g.n:])
		g.fifo, g.head = append(g.fifo[:g.n], m), 0
	default:
		g.fifo = append(g.fifo, m) // growing: head+n is the end
	}
	g.n++
	g.seen[key] = m.until
	return true
}

// pop drops the oldest mark of the FIFO, and its map entry unless the key
// was marked again since (a later until).
func (g *ReplayGuard) pop() {
	m := g.fifo[g.head]
	g.steps++
	if until, ok := g.seen[m.key]; ok && until.Equal(m.until) {
		delete(g.seen, m.key)
	}
	g.fifo[g.head] = mark{}
	g.head++
	g.n--
	switch {
	case g.n == 0 && len(g.fifo) < replayMax:
		g.fifo, g.head = g.fifo[:0], 0 // growing and empty: start over
	case g.head == len(g.fifo):
		g.head = 0
	}
}

func (g *ReplayGuard) forget(key string) {
	g.mu.Lock()
	delete(g.seen, key)
	g.mu.Unlock()
}
