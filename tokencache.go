package wechat

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-wechat/wechat/caddykit"
	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/gateway"
	"github.com/caddy-wechat/wechat/stores"
	"go.uber.org/zap"
)

// Token APIs, as the config spells them.
const (
	tokenAPIStable      = credential.APIStable
	tokenAPIClassic     = credential.APIClassic
	tokenAPIWork        = credential.APIWork // WeCom gettoken
	defaultWorkUpstream = "https://qyapi.weixin.qq.com"
)

// Names the request path and the JS-SDK handler use for engine types.
type (
	tokenEntry  = credential.Token
	wechatError = credential.APIError
)

// sharedAccount is one WeChat account's pool entry (Account is its
// configuration): the engine caches of its
// token and tickets, and the store they share. It lives in a
// caddy.UsagePool, so config reloads that keep the account keep its
// token, backoff state and schedule.
type sharedAccount struct {
	key   string // pool key: never holds the secret
	label string // metrics and status: a short keyed hash, see accountLabel
	appid string
	api   string
	now   func() time.Time

	tokens *credential.Cache
	shared *credential.Shared // nil: this process only

	logger  atomic.Pointer[zap.Logger]
	metrics atomic.Pointer[metrics]

	mu        sync.Mutex
	tickets   map[string]*credential.Cache
	bindings  []*binding // one per provisioned config using the account, oldest first
	cur       *binding
	warnedUp  bool   // a request went to a host that is not a token endpoint (logged once)
	warnedDay string // the day the quota warning was logged

	// Requests using the account right now, and whether the pool has let
	// go of it. Caddy cleans up an old config while its last requests are
	// still running, so a reload that changes the account key must not
	// close the account under them: it closes when the last one leaves.
	inflight  atomic.Int64
	closing   atomic.Bool
	closeOnce sync.Once
}

// binding is what one provisioned config lends the account: its token
// source (transport and endpoints), logger and metrics. The newest live
// one is used, so a reload switches to the new config, and a reload that
// fails falls back to the running one.
type binding struct {
	src    *credential.AccessTokenSource
	logger *zap.Logger
	m      *metrics
}

// accountSettings is everything the engine needs to build an account.
type accountSettings struct {
	appid, secret, api string
	fetchTimeout       time.Duration
	minAge             time.Duration
	ceiling            int
	store              stores.Provider // nil: in-process
}

func newAccount(key string, s accountSettings) (*sharedAccount, error) {
	a := &sharedAccount{key: key, appid: s.appid, api: s.api, now: time.Now, tickets: map[string]*credential.Cache{}}
	a.logger.Store(zap.NewNop())
	seal, err := credential.NewSealer(s.secret, s.appid)
	if err != nil {
		return nil, err
	}
	storeID := ""
	if s.store != nil {
		storeID = s.store.StoreID()
		if a.shared, err = stores.Open(s.store, seal, credential.SharedOptions{Observer: a, Logger: zap.NewNop()}); err != nil {
			return nil, err
		}
	}
	a.label = accountLabel(seal, s.api, storeID)
	window := credential.StableWindow
	if s.api != tokenAPIStable {
		window = credential.ClassicWindow
	}
	a.tokens = credential.New(credential.Config{
		Name: "access_token", AppID: s.appid, Shared: a.shared, Scheduler: caddykit.Scheduler, Window: window,
		FetchTimeout: s.fetchTimeout, MinAge: s.minAge, Ceiling: s.ceiling, Observer: a,
		Now: func() time.Time { return a.now() },
	})
	return a, nil
}

// accountLabel tells accounts apart in metrics and the status view: a
// short HMAC under a key derived from the secret (see credential.Sealer),
// so it is bounded, stable across restarts, and says nothing about the
// secret.
func accountLabel(seal *credential.Sealer, api, storeID string) string {
	sum := sha256.Sum256([]byte(seal.KeyName() + "\x00" + api + "\x00" + storeID))
	return hex.EncodeToString(sum[:])[:10]
}

func (a *sharedAccount) attach(b *binding) {
	a.mu.Lock()
	a.bindings = append(a.bindings, b)
	a.mu.Unlock()
	a.use(b)
}

func (a *sharedAccount) detach(b *binding) {
	a.mu.Lock()
	for i, x := range a.bindings {
		if x == b {
			a.bindings = append(a.bindings[:i], a.bindings[i+1:]...)
			break
		}
	}
	var last *binding
	if n := len(a.bindings); n > 0 {
		last = a.bindings[n-1]
	}
	a.mu.Unlock()
	if last != nil {
		a.use(last)
	}
}

func (a *sharedAccount) use(b *binding) {
	a.logger.Store(b.logger)
	a.metrics.Store(b.m)
	a.tokens.SetLogger(b.logger)
	if a.shared != nil {
		a.shared.SetLogger(b.logger.With(zap.String(credential.FieldAppID, a.appid))) // the store's lines name no appid
	}
	a.tokens.SetSource(b.src)
	a.mu.Lock()
	a.cur = b
	for typ, c := range a.tickets {
		c.SetLogger(b.logger)
		c.SetSource(a.ticketSource(b, typ))
	}
	a.mu.Unlock()
}

func (a *sharedAccount) ticketSource(b *binding, typ string) credential.Source {
	return &credential.TicketSource{Tokens: a.tokens, RT: b.src.RT, Bases: b.src.Bases, Type: typ, Redact: b.src.Redact,
		Now: func() time.Time { return a.now() }}
}

// ticket returns the cache of a JS-SDK ticket type, creating it on first
// use: the same engine as the token (backoff, refresh-ahead, cluster).
func (a *sharedAccount) ticket(typ string) *credential.Cache {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.tickets[typ]; c != nil {
		return c
	}
	c := credential.New(credential.Config{
		Name: "ticket:" + typ, AppID: a.appid, Shared: a.shared, Scheduler: caddykit.Scheduler, Window: credential.ClassicWindow,
		FetchTimeout: a.tokens.FetchTimeout(), Ceiling: -1, Observer: a, Now: func() time.Time { return a.now() },
	})
	if a.cur != nil {
		c.SetLogger(a.cur.logger)
		c.SetSource(a.ticketSource(a.cur, typ))
	}
	a.tickets[typ] = c
	return c
}

func (a *sharedAccount) log() *zap.Logger { return a.logger.Load() }

// Token returns a usable token; warm, it is one atomic load.
func (a *sharedAccount) Token(ctx context.Context) (*tokenEntry, error) { return a.tokens.Token(ctx) }

// Invalidate drops e only if it is still the cached token.
func (a *sharedAccount) Invalidate(e *tokenEntry) bool { return a.tokens.Invalidate(e) }

// Rejected is the request path's call on a token errcode from the API
// path api; see credential.Cache.RejectedOn.
func (a *sharedAccount) Rejected(ctx context.Context, e *tokenEntry, api string) (*tokenEntry, bool, error) {
	return a.tokens.RejectedOn(ctx, e, api)
}

// Recent lists the last few token values the account held, so that the
// request path can scrub them from answers (rid/get and the like).
func (a *sharedAccount) Recent() []string { return a.tokens.Recent() }

// warm adopts a stored token on provision, so that after a restart on a
// durable store the first requests wait for no fetch.
func (a *sharedAccount) warm() {
	if a.shared == nil || !a.shared.Durable() || a.tokens.Current() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	a.tokens.Warm(ctx)
}

// enter and leave bracket one request's use of the account.
func (a *sharedAccount) enter() { a.inflight.Add(1) }
func (a *sharedAccount) leave() {
	if a.inflight.Add(-1) == 0 && a.closing.Load() {
		a.close()
	}
}

// Destruct is called by the usage pool when the last config using this
// account is unloaded. It never waits: with no request inside, the account
// closes now (Close cancels fetches in flight, so a hung fetch does not
// hold up a stop); otherwise the last request out closes it, and a timer
// bounded by the longest load closes it regardless.
func (a *sharedAccount) Destruct() error {
	a.closing.Store(true)
	if a.inflight.Load() == 0 {
		a.close()
		return nil
	}
	time.AfterFunc(2*a.tokens.FetchTimeout()+3*time.Second, a.close)
	return nil
}

// close releases the account's caches and store connections, once.
func (a *sharedAccount) close() {
	a.closeOnce.Do(func() {
		a.mu.Lock()
		tickets := a.tickets
		a.mu.Unlock()
		for _, c := range tickets {
			c.Close()
		}
		a.tokens.Close()
		if a.shared != nil {
			if err := a.shared.Close(); err != nil {
				a.log().Debug("closing the store", zap.Error(err))
			}
		}
	})
}

// redact removes the account's secret, the tokens it held lately and
// WeChat's rids from s: a client-facing message must not hold any of
// them (a rid of a token fetch lets rid/get return the secret).
func (a *sharedAccount) redact(s string) string {
	a.mu.Lock()
	b := a.cur
	a.mu.Unlock()
	if b != nil {
		s = b.src.Redact(s)
	}
	for _, v := range a.tokens.Recent() {
		s = strings.ReplaceAll(s, v, "[token]")
	}
	return gateway.StripRIDs(s)
}

// Observer hooks (credential.Observer), forwarded to the current config's
// metrics.
func (a *sharedAccount) Fetched(name string, force bool, err error) {
	a.metrics.Load().fetched(a, name, force, err)
}
func (a *sharedAccount) StoreError(op string)       { a.metrics.Load().storeError(a, op) }
func (a *sharedAccount) CeilingReached(name string) { a.metrics.Load().ceiling(a, name) }
