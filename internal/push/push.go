// Package push takes WeChat's message pushes (消息推送) for one official
// account, mini program or WeCom app, so the app behind it needs neither
// the callback Token nor the EncodingAESKey: it answers the URL check,
// checks signatures and freshness, decrypts, refuses anything malformed,
// hands the plaintext message to the next handler once per message (WeChat
// retries a message three times when an answer takes over 5 s), and
// encrypts and signs the app's passive reply.
//
// It imports nothing from Caddy; the wechat_push module is a thin layer
// over it. Anything that is not a fresh, correctly signed push for this
// account gets a 4xx, changes no state and reaches no app.
package push

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/wxcrypto"
	"go.uber.org/zap"
)

// Kind is the sort of account that pushes.
type Kind uint8

// The kinds.
const (
	OfficialAccount Kind = iota // 公众号
	MiniProgram                 // 小程序
	WeCom                       // 企业微信 (self-built app: corpid; third-party app: suite id)
)

// Mode is the account's 消息加解密方式.
type Mode uint8

// The modes. Compatible is handled like safe: WeChat sends Encrypt in
// both, and the plaintext copy of a compatible push (which no signature
// covers) is ignored.
const (
	Safe Mode = iota
	Compatible
	Plain
)

// Format is the mini program's 数据格式.
type Format uint8

// The formats.
const (
	XML Format = iota
	JSON
)

// Defaults of a Config.
const (
	// DefaultMaxBody: a real push is under 4 KiB.
	DefaultMaxBody = 64 << 10
	// DefaultMaxSkew is how far a push's timestamp may be from this
	// server's clock, either way. WeChat stamps each delivery when it
	// sends it, so the window only has to cover clock error and transit;
	// 5 minutes tolerates a host whose NTP has lapsed for a while, and
	// marks outlive it (2×window + 1 minute), so a captured push replayed
	// inside the window still meets its mark and is refused.
	DefaultMaxSkew = 5 * time.Minute
	// DefaultAppTimeout bounds the app's answer. WeChat waits 5 s per
	// try and tries three times, about 15 s in all: an answer after 5 s
	// still reaches WeChat through a retry that waits for it, and one
	// after 13 s would come too late for the last try.
	DefaultAppTimeout = 13 * time.Second
	// DefaultMaxReply bounds the app's reply (a passive reply is small;
	// WeChat rejects large ones).
	DefaultMaxReply = 64 << 10
	// retrySpan: a delivery more than this after the first is not one of
	// WeChat's retries.
	retrySpan = 30 * time.Second
	// maxDeliveries: WeChat's three tries, and one more for a retry sent
	// while a lost answer was in transit.
	maxDeliveries = 4
	// leaseFor is how long a claim holds a message without renewal: the
	// owner renews it every leaseRenew while its app works, so a slow app
	// keeps its message for up to AppTimeout, and an instance that died
	// blocks the retries for at most WeChat's 5 s (then one takes over).
	leaseFor    = 5 * time.Second
	leaseRenew  = time.Second
	claimMargin = 2 * time.Second
	markMargin  = time.Minute
	maxParam    = 128
	maxEchostr  = 1024
)

// Config is one account's push settings.
type Config struct {
	Kind   Kind
	Mode   Mode
	Format Format // JSON: a mini program's JSON pushes

	Token  string // 3–32 characters
	AESKey string // 43 characters; "" only in plain mode
	// AppID is the receiver id inside encrypted messages: the appid, or
	// for WeCom the corpid (self-built app) or suite id (third-party app).
	AppID string
	// OriginalID, if set, is the account's gh_ id: ToUserName must be it.
	OriginalID string
	// AgentID, if set (WeCom), is the app's AgentID: pushes for another
	// agent of the corp are refused.
	AgentID string

	MaxBody    int64         // 0: DefaultMaxBody
	MaxSkew    time.Duration // 0: DefaultMaxSkew
	AppTimeout time.Duration // 0: DefaultAppTimeout
	MaxReply   int           // 0: DefaultMaxReply

	// Marks is the store of the messages seen: a credential.Backend for a
	// cluster, nil for this process only (MemMarks with default bounds).
	Marks     Marks
	Prefix    string        // key prefix in Marks ("wechat:" by default)
	OpTimeout time.Duration // bound of one Marks call (100 ms by default)
	// Local is the in-process marks used without Marks, and when Marks
	// fails (nil: a new MemMarks). Share one across config reloads so a
	// reload forgets no message.
	Local *MemMarks

	Now    func() time.Time
	Logger *zap.Logger
	Events Events
}

// Events counts outcomes for metrics, with bounded labels only.
type Events interface {
	Push(result string)
	StoreError()
}

// Results: the label of every outcome.
const (
	ResultOK          = "ok"           // the app answered; its reply (or success) went back
	ResultURLCheck    = "url_check"    // GET answered
	ResultRetryWaited = "retry_waited" // a retry waited for the first delivery's reply
	ResultRetryStored = "retry_stored" // a retry got the stored reply
	ResultAppError    = "app_error"    // the app failed: success went back instead
	ResultAppTimeout  = "app_timeout"  // the app took longer than AppTimeout
	ResultBadReply    = "bad_reply"    // the app's reply was not a valid reply: success instead
	ResultGone        = "wait_failed"  // a retry could not learn the reply: 503, WeChat retries
	ResultMethod      = "method"
	ResultParams      = "params"
	ResultStale       = "stale_timestamp"
	ResultTooLarge    = "too_large"
	ResultEnvelope    = "envelope"
	ResultSignature   = "signature"
	ResultReplay      = "replay"
	ResultDecrypt     = "decrypt"
	ResultAppID       = "appid"
	ResultMessage     = "message"
	ResultMode        = "mode"
)

// Results lists every result, for metrics that want them all at zero.
var Results = []string{ResultOK, ResultURLCheck, ResultRetryWaited, ResultRetryStored, ResultAppError, ResultAppTimeout,
	ResultBadReply, ResultGone, ResultMethod, ResultParams, ResultStale, ResultTooLarge, ResultEnvelope, ResultSignature,
	ResultReplay, ResultDecrypt, ResultAppID, ResultMessage, ResultMode}

// Headers the app gets; any a client sent under these names is dropped.
const (
	HeaderAppID   = "Wechat-Appid"    // official account / mini program appid
	HeaderCorpID  = "Wechat-Corpid"   // WeCom: corpid or suite id
	HeaderAgentID = "Wechat-Agentid"  // WeCom: AgentID
	HeaderMsgType = "Wechat-Msg-Type" // MsgType
	HeaderEvent   = "Wechat-Event"    // Event, for events
	HeaderOpenID  = "Wechat-Openid"   // FromUserName: the openid (WeCom: the userid)
	HeaderMsgKey  = "Wechat-Msg-Key"  // the de-duplication key, hashed
)

var appHeaders = []string{HeaderAppID, HeaderCorpID, HeaderAgentID, HeaderMsgType, HeaderEvent, HeaderOpenID, HeaderMsgKey}

// Gateway serves one account's pushes.
type Gateway struct {
	cfg     Config
	renew   time.Duration     // leaseRenew; tests shorten it
	crypter *wxcrypto.Crypter // nil in plain mode
	shared  *dedupe           // over cfg.Marks; nil without
	local   *dedupe           // in-process
	log     *zap.Logger
}

// New checks cfg and builds the gateway.
func New(cfg Config) (*Gateway, error) {
	if n := len(cfg.Token); n < 3 || n > 32 {
		return nil, errors.New("push: token must be 3 to 32 characters")
	}
	if strings.TrimSpace(cfg.AppID) == "" {
		return nil, errors.New("push: the appid (WeCom: corpid or suite id) is required")
	}
	if cfg.Kind == WeCom && cfg.Mode != Safe {
		return nil, errors.New("push: WeCom pushes are always encrypted: mode must be safe")
	}
	if cfg.Format == JSON && cfg.Kind != MiniProgram {
		return nil, errors.New("push: the JSON format is a mini program's")
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxSkew <= 0 {
		cfg.MaxSkew = DefaultMaxSkew
	}
	if cfg.AppTimeout <= 0 {
		cfg.AppTimeout = DefaultAppTimeout
	}
	if cfg.MaxReply <= 0 {
		cfg.MaxReply = DefaultMaxReply
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "wechat:"
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 100 * time.Millisecond
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, renew: leaseRenew}
	if g.log == nil {
		g.log = zap.NewNop()
	}
	if cfg.Mode != Plain {
		c, err := wxcrypto.New(cfg.Token, cfg.AESKey, cfg.AppID)
		if err != nil {
			return nil, fmt.Errorf("push: %v", err) // never quotes the key
		}
		g.crypter = c
	} else if cfg.AESKey != "" {
		return nil, errors.New("push: plain mode takes no encoding_aes_key")
	}
	// The marks' keys and values are named and sealed under a secret only
	// this account's gateways hold.
	seal, err := credential.NewSealer("push\x00"+cfg.Token+"\x00"+cfg.AESKey, cfg.AppID)
	if err != nil {
		return nil, err
	}
	mk := func(m Marks, poll time.Duration) *dedupe {
		return &dedupe{marks: m, seal: seal, prefix: cfg.Prefix, opTimeout: cfg.OpTimeout, retrySpan: retrySpan,
			maxDeliveries: maxDeliveries, claimFor: leaseFor, ttl: 2*cfg.MaxSkew + markMargin, poll: poll}
	}
	if cfg.Local == nil {
		cfg.Local = NewMemMarks(0, 0, cfg.Now)
		g.cfg.Local = cfg.Local
	}
	g.local = mk(cfg.Local, 10*time.Millisecond)
	if cfg.Marks != nil {
		g.shared = mk(cfg.Marks, 50*time.Millisecond)
	}
	return g, nil
}

// Next is the handler after the gateway: the app.
type Next func(w http.ResponseWriter, r *http.Request) error

// Reject is a refused push: its status and a reason that quotes nothing
// that was sent.
type Reject struct {
	Status int
	Result string
	Msg    string
}

func (r *Reject) Error() string { return r.Msg }

func reject(status int, result, msg string) *Reject { return &Reject{status, result, msg} }

func (g *Gateway) event(result string) {
	if g.cfg.Events != nil {
		g.cfg.Events.Push(result)
	}
}

// ServeHTTP answers one request from WeChat.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request, next Next) {
	var err error
	switch r.Method {
	case http.MethodGet:
		err = g.urlCheck(w, r)
	case http.MethodPost:
		err = g.post(w, r, next)
	default:
		err = reject(http.StatusMethodNotAllowed, ResultMethod, "GET (URL check) or POST (push) only")
	}
	if err == nil {
		return
	}
	var rj *Reject
	if !errors.As(err, &rj) {
		rj = reject(http.StatusInternalServerError, "error", "internal error")
	}
	g.event(rj.Result)
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Wechat-Gateway", "error")
	if rj.Status == http.StatusMethodNotAllowed {
		h.Set("Allow", "GET, POST")
	}
	w.WriteHeader(rj.Status)
	_, _ = io.WriteString(w, "caddy-wechat push: "+rj.Msg+"\n")
}

// signature is sha1 over the sorted parts, as WeChat signs.
func signature(parts ...string) string {
	sort.Strings(parts)
	h := sha1.New()
	for _, p := range parts {
		io.WriteString(h, p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func sigEqual(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(strings.ToLower(got)), []byte(want)) == 1
}

// query reads the signed parameters and checks the timestamp.
func (g *Gateway) query(r *http.Request, now time.Time) (q map[string]string, err error) {
	vals := r.URL.Query()
	q = map[string]string{}
	for _, k := range []string{"timestamp", "nonce", "signature", "msg_signature", "echostr", "encrypt_type", "openid"} {
		if vs := vals[k]; len(vs) > 0 {
			if len(vs) > 1 {
				return nil, reject(http.StatusBadRequest, ResultParams, k+" is given twice")
			}
			limit := maxParam
			if k == "echostr" {
				limit = maxEchostr
			}
			if len(vs[0]) > limit {
				return nil, reject(http.StatusBadRequest, ResultParams, k+" is too long")
			}
			q[k] = vs[0]
		}
	}
	if q["timestamp"] == "" || q["nonce"] == "" {
		return nil, reject(http.StatusBadRequest, ResultParams, "timestamp and nonce are required")
	}
	sec, perr := strconv.ParseInt(q["timestamp"], 10, 64)
	if perr != nil || sec <= 0 {
		return nil, reject(http.StatusBadRequest, ResultParams, "timestamp is not a number")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > g.cfg.MaxSkew || d < -g.cfg.MaxSkew {
		return nil, reject(http.StatusBadRequest, ResultStale, "timestamp too far from now (a replay, or a clock off by more than "+g.cfg.MaxSkew.String()+")")
	}
	return q, nil
}

// urlCheck answers WeChat's GET when the server URL is saved.
func (g *Gateway) urlCheck(w http.ResponseWriter, r *http.Request) error {
	q, err := g.query(r, g.cfg.Now())
	if err != nil {
		return err
	}
	echostr := q["echostr"]
	if echostr == "" {
		return reject(http.StatusBadRequest, ResultParams, "echostr is required")
	}
	var answer []byte
	if g.cfg.Kind == WeCom {
		if !sigEqual(q["msg_signature"], signature(g.cfg.Token, q["timestamp"], q["nonce"], echostr)) {
			return reject(http.StatusForbidden, ResultSignature, "msg_signature does not match")
		}
		plain, derr := g.crypter.Decrypt(echostr)
		if derr != nil {
			return decryptReject(derr)
		}
		answer = plain
	} else {
		if !sigEqual(q["signature"], signature(g.cfg.Token, q["timestamp"], q["nonce"])) {
			return reject(http.StatusForbidden, ResultSignature, "signature does not match")
		}
		answer = []byte(echostr)
	}
	g.event(ResultURLCheck)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
	_, _ = w.Write(answer)
	return nil
}

func decryptReject(err error) error {
	if errors.Is(err, wxcrypto.ErrAppID) {
		return reject(http.StatusForbidden, ResultAppID, "the message is encrypted for another appid")
	}
	return reject(http.StatusBadRequest, ResultDecrypt, "decryption failed ("+err.Error()+")")
}

// Message is a verified, decrypted push.
type Message struct {
	Plain  []byte // the message as WeChat wrote it (XML or JSON)
	Fields Fields
	Key    string // the de-duplication key
}

// Open checks and decrypts one POST: signatures, freshness, size, shape,
// receiver. It reads the body and changes no state; the fuzz target and
// the benchmark call it directly.
func (g *Gateway) Open(r *http.Request) (*Message, map[string]string, error) {
	now := g.cfg.Now()
	q, err := g.query(r, now)
	if err != nil {
		return nil, nil, err
	}
	if r.ContentLength > g.cfg.MaxBody {
		return nil, nil, reject(http.StatusRequestEntityTooLarge, ResultTooLarge, "body too large")
	}
	body, rerr := io.ReadAll(io.LimitReader(r.Body, g.cfg.MaxBody+1))
	if rerr != nil {
		return nil, nil, reject(http.StatusBadRequest, ResultEnvelope, "reading the body failed")
	}
	if int64(len(body)) > g.cfg.MaxBody {
		return nil, nil, reject(http.StatusRequestEntityTooLarge, ResultTooLarge, "body too large")
	}
	m, err := g.OpenBody(q, body, now)
	return m, q, err
}

// OpenBody is Open after the query and the body are read.
func (g *Gateway) OpenBody(q map[string]string, body []byte, now time.Time) (*Message, error) {
	ts, nonce := q["timestamp"], q["nonce"]
	// The plain signature first: WeChat sends it to official accounts and
	// mini programs in every mode, and it costs one sha1.
	if g.cfg.Kind != WeCom && !sigEqual(q["signature"], signature(g.cfg.Token, ts, nonce)) {
		return nil, reject(http.StatusForbidden, ResultSignature, "signature does not match")
	}
	encrypted := g.cfg.Kind == WeCom || q["encrypt_type"] == "aes"
	switch {
	case q["encrypt_type"] != "" && q["encrypt_type"] != "aes" && q["encrypt_type"] != "raw":
		return nil, reject(http.StatusBadRequest, ResultParams, "encrypt_type must be aes")
	case g.cfg.Mode == Plain && encrypted:
		return nil, reject(http.StatusBadRequest, ResultMode, "an encrypted push to an account configured in plain mode")
	case g.cfg.Mode != Plain && !encrypted:
		return nil, reject(http.StatusBadRequest, ResultMode, "a plaintext push to an account configured in safe mode")
	}
	parse := ParseXML
	if g.cfg.Format == JSON {
		parse = ParseJSON
	}
	env, perr := parse(body)
	if perr != nil {
		return nil, reject(http.StatusBadRequest, ResultEnvelope, "the body is "+perr.Error())
	}
	plain := body
	f := env
	if encrypted {
		if env.Encrypt == "" {
			return nil, reject(http.StatusBadRequest, ResultEnvelope, "the body has no Encrypt")
		}
		if q["msg_signature"] == "" || !sigEqual(q["msg_signature"], signature(g.cfg.Token, ts, nonce, env.Encrypt)) {
			return nil, reject(http.StatusForbidden, ResultSignature, "msg_signature does not match")
		}
		p, derr := g.crypter.Decrypt(env.Encrypt)
		if derr != nil {
			return nil, decryptReject(derr)
		}
		inner, ierr := parse(p)
		if ierr != nil {
			return nil, reject(http.StatusBadRequest, ResultMessage, "the decrypted message is "+ierr.Error())
		}
		// The envelope's clear fields must agree with the signed ones.
		if env.ToUserName != "" && env.ToUserName != inner.ToUserName {
			return nil, reject(http.StatusForbidden, ResultAppID, "the envelope's ToUserName differs from the message's")
		}
		if env.AgentID != "" && env.AgentID != inner.AgentID {
			return nil, reject(http.StatusForbidden, ResultAppID, "the envelope's AgentID differs from the message's")
		}
		plain, f = p, inner
	} else if f.Encrypt != "" {
		return nil, reject(http.StatusBadRequest, ResultMode, "an encrypted push to an account configured in plain mode")
	}
	if f.ToUserName == "" || f.FromUserName == "" || f.MsgType == "" {
		return nil, reject(http.StatusBadRequest, ResultMessage, "the message lacks ToUserName, FromUserName or MsgType")
	}
	if g.cfg.OriginalID != "" && f.ToUserName != g.cfg.OriginalID {
		return nil, reject(http.StatusForbidden, ResultAppID, "the message is for another account (ToUserName)")
	}
	if g.cfg.AgentID != "" && f.AgentID != g.cfg.AgentID && f.AgentID != "" {
		return nil, reject(http.StatusForbidden, ResultAppID, "the message is for another agent (AgentID)")
	}
	if o := q["openid"]; o != "" && o != f.FromUserName {
		return nil, reject(http.StatusForbidden, ResultMessage, "openid differs from the message's FromUserName")
	}
	ct, ok := f.createTime()
	if !ok {
		return nil, reject(http.StatusBadRequest, ResultMessage, "CreateTime is not a number")
	}
	// A retry keeps the first delivery's CreateTime: allow the retry span.
	if d := now.Sub(time.Unix(ct, 0)); d > g.cfg.MaxSkew+retrySpan || d < -g.cfg.MaxSkew {
		return nil, reject(http.StatusBadRequest, ResultStale, "CreateTime too far from now")
	}
	key := f.ToUserName + "\x00" + f.AgentID + "\x00"
	if f.MsgID != "" {
		key += "m\x00" + f.MsgID
	} else {
		// WeChat's advice for events: FromUserName + CreateTime (+ Event).
		key += "e\x00" + f.FromUserName + "\x00" + f.CreateTime + "\x00" + f.Event + "\x00" + f.MsgType
	}
	return &Message{Plain: plain, Fields: f, Key: key}, nil
}

func newOwner() (o [12]byte) {
	_, _ = rand.Read(o[:])
	return o
}

// dd picks the marks and runs fn on them: the shared ones, and the
// process's own when the store fails (a message may then reach the app
// once per instance, rather than not at all).
func (g *Gateway) dd(fn func(d *dedupe) error) (*dedupe, error) {
	if g.shared != nil {
		err := fn(g.shared)
		if err == nil || errors.Is(err, errReplay) {
			return g.shared, err
		}
		if g.cfg.Events != nil {
			g.cfg.Events.StoreError()
		}
		g.log.Warn("wechat_push: the store of message marks failed; de-duplicating in this process only",
			zap.String("appid", g.cfg.AppID), zap.String("error", err.Error()))
	}
	return g.local, fn(g.local)
}

func (g *Gateway) post(w http.ResponseWriter, r *http.Request, next Next) error {
	m, q, err := g.Open(r)
	if err != nil {
		return err
	}
	// Store calls outlive the client: WeChat hangs up after 5 s, and the
	// first delivery's reply must still be stored for its retries.
	bg := context.WithoutCancel(r.Context())
	now := g.cfg.Now()
	if g.cfg.Mode == Plain {
		sigKey := q["timestamp"] + "\x00" + q["nonce"] + "\x00" + strings.ToLower(q["signature"])
		if _, err := g.dd(func(d *dedupe) error { return d.bindSig(bg, sigKey, m.Key, now) }); err != nil {
			if errors.Is(err, errReplay) {
				return reject(http.StatusConflict, ResultReplay, "this signed query was already used for another message")
			}
			return err
		}
	}
	owner := newOwner()
	var out outcome
	var rec *record
	d, err := g.dd(func(d *dedupe) (err error) {
		key := d.key("push", m.Key)
		out, rec, err = d.begin(bg, key, owner, now)
		return err
	})
	if err != nil {
		return err
	}
	key := d.key("push", m.Key)
	if out == waitApp {
		wctx, cancel := context.WithTimeout(r.Context(), g.cfg.AppTimeout+leaseFor+claimMargin)
		out, rec, err = d.wait(wctx, key, owner, g.cfg.Now)
		cancel()
		if err != nil {
			if r.Context().Err() != nil {
				return nil // WeChat hung up: nobody to answer
			}
			return reject(http.StatusServiceUnavailable, ResultGone, "the first delivery of this message gave no reply in time; WeChat retries")
		}
		if out == useStore {
			g.event(ResultRetryWaited)
			return g.reply(w, q, rec.ctype, rec.body)
		}
	}
	switch out {
	case isReplay:
		return reject(http.StatusConflict, ResultReplay, "this message was already received (outside WeChat's retry pattern)")
	case useStore:
		g.event(ResultRetryStored)
		return g.reply(w, q, rec.ctype, rec.body)
	}
	stop := g.keepLease(bg, d, key, owner)
	ctype, body, result := g.runApp(r, m, next)
	stop()
	g.event(result)
	if ferr := d.finish(bg, key, owner, ctype, body, g.cfg.Now()); ferr != nil {
		g.log.Warn("wechat_push: storing the reply for retries failed", zap.String("appid", g.cfg.AppID), zap.String("error", ferr.Error()))
	}
	return g.reply(w, q, ctype, body)
}

// keepLease renews this delivery's claim while its app works, until
// stop. A timer rather than a goroutine: most apps answer before the
// first renewal, and then it costs one timer. A renewal still running
// after stop is harmless: it finds the message done (or its version
// changed) and writes nothing.
func (g *Gateway) keepLease(ctx context.Context, d *dedupe, key string, owner [12]byte) (stop func()) {
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock() // t is set before the first renewal reads it
	defer mu.Unlock()
	t = time.AfterFunc(g.renew, func() {
		held, err := d.renew(ctx, key, owner, g.cfg.Now())
		if err != nil {
			g.log.Debug("wechat_push: renewing a message's claim failed", zap.String("error", err.Error()))
		}
		mu.Lock()
		defer mu.Unlock()
		if !stopped && (held || err != nil) { // not taken over: keep holding
			t.Reset(g.renew)
		}
	})
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

// Reply content types, as stored in a mark.
const (
	ctypeText byte = iota // success / empty
	ctypeXML
	ctypeJSON
)

var success = []byte("success")

// runApp hands the plaintext message to the app and takes its reply.
func (g *Gateway) runApp(r *http.Request, m *Message, next Next) (ctype byte, body []byte, result string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), g.cfg.AppTimeout)
	defer cancel()
	ar := r.Clone(ctx)
	ar.Body = io.NopCloser(bytes.NewReader(m.Plain))
	ar.ContentLength = int64(len(m.Plain))
	ar.GetBody = nil
	h := ar.Header
	for _, k := range appHeaders {
		h.Del(k)
	}
	h.Del("Content-Encoding")
	h.Del("Transfer-Encoding")
	h.Del("Expect")
	// The reply must come back as plain bytes: without the client's
	// Accept-Encoding, Go's transport (reverse_proxy's) asks for gzip
	// itself and undoes it.
	h.Del("Accept-Encoding")
	h.Set("Content-Length", strconv.Itoa(len(m.Plain)))
	if g.cfg.Format == JSON {
		h.Set("Content-Type", "application/json")
	} else {
		h.Set("Content-Type", "text/xml; charset=utf-8")
	}
	f := m.Fields
	if g.cfg.Kind == WeCom {
		// The corp the message is for: the corpid of a self-built app
		// (checked by decryption), the authorizing corp for a suite.
		h.Set(HeaderCorpID, headerSafe(f.ToUserName))
		if f.AgentID != "" {
			h.Set(HeaderAgentID, f.AgentID)
		}
	} else {
		h.Set(HeaderAppID, g.cfg.AppID)
	}
	h.Set(HeaderMsgType, headerSafe(f.MsgType))
	if f.Event != "" {
		h.Set(HeaderEvent, headerSafe(f.Event))
	}
	h.Set(HeaderOpenID, headerSafe(f.FromUserName))
	h.Set(HeaderMsgKey, hex.EncodeToString(sha1Sum(m.Key))[:24])
	// The signed parameters mean nothing to the app.
	uq := ar.URL.Query()
	for _, k := range []string{"signature", "msg_signature", "timestamp", "nonce", "encrypt_type", "echostr"} {
		uq.Del(k)
	}
	u := *ar.URL
	u.RawQuery = uq.Encode()
	ar.URL = &u
	ar.RequestURI = u.RequestURI()

	rec := &recorder{h: http.Header{}, max: g.cfg.MaxReply}
	err := next(rec, ar)
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	switch {
	case ctx.Err() != nil:
		g.log.Warn("wechat_push: the app took too long; WeChat gets success", zap.String("appid", g.cfg.AppID),
			zap.String("msg_type", headerSafe(f.MsgType)), zap.Duration("app_timeout", g.cfg.AppTimeout))
		return ctypeText, success, ResultAppTimeout
	case err != nil || status >= 400:
		g.log.Warn("wechat_push: the app failed; WeChat gets success so it neither retries nor shows the user an error",
			zap.String("appid", g.cfg.AppID), zap.String("msg_type", headerSafe(f.MsgType)), zap.Int("status", status), zap.Bool("handler_error", err != nil))
		return ctypeText, success, ResultAppError
	case rec.over:
		g.log.Warn("wechat_push: the app's reply is too large; WeChat gets success", zap.String("appid", g.cfg.AppID), zap.Int("max_reply", g.cfg.MaxReply))
		return ctypeText, success, ResultBadReply
	}
	b := bytes.TrimSpace(rec.buf.Bytes())
	if len(b) == 0 || bytes.Equal(b, success) {
		return ctypeText, b, ResultOK
	}
	var perr error
	ct := ctypeXML
	if b[0] == '{' {
		ct = ctypeJSON
		_, perr = ParseJSON(b)
	} else {
		_, perr = ParseXML(b)
	}
	if perr != nil {
		g.log.Warn("wechat_push: the app's reply is neither success nor a well-formed reply; WeChat gets success", zap.String("appid", g.cfg.AppID))
		return ctypeText, success, ResultBadReply
	}
	return ct, bytes.Clone(b), ResultOK
}

func sha1Sum(s string) []byte {
	h := sha1.Sum([]byte(s))
	return h[:]
}

// headerSafe keeps a header value to printable ASCII.
func headerSafe(s string) string {
	if len(s) > maxParam {
		s = s[:maxParam]
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return strings.Map(func(r rune) rune {
				if r < 0x21 || r > 0x7e {
					return -1
				}
				return r
			}, s)
		}
	}
	return s
}

// reply writes the passive reply to WeChat: success or empty as is, a
// message as is in plain mode, encrypted and signed otherwise.
func (g *Gateway) reply(w http.ResponseWriter, q map[string]string, ctype byte, body []byte) error {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	if ctype == ctypeText || g.cfg.Mode == Plain {
		switch ctype {
		case ctypeXML:
			h.Set("Content-Type", "application/xml; charset=utf-8")
		case ctypeJSON:
			h.Set("Content-Type", "application/json")
		default:
			h.Set("Content-Type", "text/plain; charset=utf-8")
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
		return nil
	}
	out := g.Seal(body, strconv.FormatInt(g.cfg.Now().Unix(), 10), nonceString())
	if g.cfg.Format == JSON {
		h.Set("Content-Type", "application/json")
	} else {
		h.Set("Content-Type", "application/xml; charset=utf-8")
	}
	h.Set("Content-Length", strconv.Itoa(len(out)))
	_, _ = w.Write(out)
	return nil
}

// Seal encrypts a passive reply and signs it: the body WeChat expects in
// safe mode, in XML or (mini program, JSON format) JSON.
func (g *Gateway) Seal(reply []byte, timestamp, nonce string) []byte {
	enc := g.crypter.Encrypt(reply)
	sig := signature(g.cfg.Token, timestamp, nonce, enc)
	var b bytes.Buffer
	b.Grow(len(enc) + 200)
	if g.cfg.Format == JSON {
		// Encrypt is base64 and the rest is digits and hex: nothing to escape.
		b.WriteString(`{"Encrypt":"`)
		b.WriteString(enc)
		b.WriteString(`","MsgSignature":"`)
		b.WriteString(sig)
		b.WriteString(`","TimeStamp":`)
		b.WriteString(timestamp)
		b.WriteString(`,"Nonce":"`)
		b.WriteString(nonce)
		b.WriteString(`"}`)
		return b.Bytes()
	}
	b.WriteString("<xml><Encrypt><![CDATA[")
	b.WriteString(enc)
	b.WriteString("]]></Encrypt><MsgSignature><![CDATA[")
	b.WriteString(sig)
	b.WriteString("]]></MsgSignature><TimeStamp>")
	b.WriteString(timestamp)
	b.WriteString("</TimeStamp><Nonce><![CDATA[")
	b.WriteString(nonce)
	b.WriteString("]]></Nonce></xml>")
	return b.Bytes()
}

// nonceString is a random decimal nonce, as WeChat's.
func nonceString() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	n := uint64(0)
	for _, c := range b {
		n = n<<8 | uint64(c)
	}
	return strconv.FormatUint(n%1e10, 10)
}

// recorder takes the app's reply, up to max bytes.
type recorder struct {
	h      http.Header
	status int
	buf    bytes.Buffer
	max    int
	over   bool
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
}
func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.buf.Len()+len(p) > r.max {
		r.over = true
		return len(p), nil
	}
	return r.buf.Write(p)
}
