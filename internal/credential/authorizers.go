package credential

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// Registry holds the authorizers of one component, built to hold ten
// thousand:
//   - a Cache per authorizer, created on first use (or on authorization),
//     so a merchant that never calls costs nothing;
//   - the warm lookup is a hash, one atomic load of a copy-on-write shard
//     and a map read: O(1), lock-free, no allocation;
//   - refresh-ahead runs on the shared Scheduler (one goroutine, a timer
//     heap) with renewals spread over the token's life (Config.Spread),
//     and no per-minute store peek per authorizer.
type Registry struct {
	p      *Platform
	cfg    RegistryConfig
	seed   maphash.Seed
	shards [registryShards]regShard
	n      atomic.Int64
	create singleflight.Group
}

// registryShards: a power of two; an insert copies one shard, about 40
// entries at 10,000 authorizers.
const registryShards = 256

type regShard struct {
	mu sync.Mutex // serialises writers; readers only Load
	m  atomic.Pointer[map[string]*Authorizer]
}

// RegistryConfig is the Config template of every authorizer's Cache.
type RegistryConfig struct {
	Shared       *Shared // the component's store (sealed with its secret); nil: this process only
	Scheduler    *Scheduler
	Window       Window // zero: AuthorizerWindow
	FetchTimeout time.Duration
	MinAge       time.Duration
	Ceiling      int
	Now          func() time.Time
	Rand         func() float64
	Logger       *zap.Logger
	Observer     Observer
	Sleep        func(ctx context.Context, d time.Duration) error // Config.Sleep
}

// Authorizer is one merchant's entry: its source, inline so an entry is
// two allocations plus its Cache.
type Authorizer struct {
	src   AuthorizerTokenSource
	cache *Cache
	reg   *Registry
	memo  atomic.Value
}

// Memo and SetMemo keep a value the request path derives from this
// authorizer (its scrub set), so that it is built once per token rather
// than per call, and goes when the authorizer goes: its memory is bounded
// by the registry's.
func (a *Authorizer) Memo() any     { return a.memo.Load() }
func (a *Authorizer) SetMemo(v any) { a.memo.Store(v) }

// AppID is the authorizer's appid.
func (a *Authorizer) AppID() string { return a.src.AppID }

// Cache is the authorizer's token cache (Token, Rejected for the replay).
func (a *Authorizer) Cache() *Cache { return a.cache }

// NewRegistry builds an empty registry over p.
func NewRegistry(p *Platform, cfg RegistryConfig) *Registry {
	if cfg.Window == (Window{}) {
		cfg.Window = AuthorizerWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Registry{p: p, cfg: cfg, seed: maphash.MakeSeed()}
}

// Platform is the registry's platform.
func (r *Registry) Platform() *Platform { return r.p }

// Len is the number of authorizers held in this process.
func (r *Registry) Len() int { return int(r.n.Load()) }

func (r *Registry) shard(appid string) *regShard {
	return &r.shards[maphash.String(r.seed, appid)&(registryShards-1)]
}

// Lookup is the warm path: the authorizer's entry, or nil if this process
// holds none. It never allocates.
func (r *Registry) Lookup(appid string) *Authorizer {
	if m := r.shard(appid).m.Load(); m != nil {
		return (*m)[appid]
	}
	return nil
}

// ValidAppID bounds what may name an authorizer: it becomes part of a
// store key and a log field.
func ValidAppID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Get returns the authorizer's entry, creating it when a refresh token
// is stored for it. An appid with none is an *AuthorizerError wrapping
// ErrUnknownAuthorizer, and leaves nothing behind.
func (r *Registry) Get(ctx context.Context, appid string) (*Authorizer, error) {
	if a := r.Lookup(appid); a != nil {
		return a, nil
	}
	if !ValidAppID(appid) {
		return nil, &AuthorizerError{"(invalid)", ErrUnknownAuthorizer}
	}
	v, err, _ := r.create.Do(appid, func() (any, error) {
		if a := r.Lookup(appid); a != nil {
			return a, nil
		}
		a := r.newAuthorizer(appid)
		rt, err := a.cache.Aux().Get(ctx, AuxRefreshToken)
		if err == nil && !unusable(rt) {
			return r.insert(a), nil
		}
		a.cache.Close()
		if r.cfg.Shared != nil && r.cfg.Shared.BreakerOpen() {
			return nil, fmt.Errorf("authorizer %s: the credential store is unavailable, so its refresh token cannot be read", appid)
		}
		if err == nil || errors.Is(err, ErrNotFound) {
			return nil, &AuthorizerError{appid, ErrUnknownAuthorizer}
		}
		return nil, fmt.Errorf("authorizer %s: %w", appid, err)
	})
	if err != nil {
		return nil, err
	}
	return v.(*Authorizer), nil
}

// Token returns a usable token of the authorizer, and its entry for the
// replay flow (Cache().Rejected). A revoked or forgotten authorizer is
// dropped from the registry.
func (r *Registry) Token(ctx context.Context, appid string) (*Token, *Authorizer, error) {
	a, err := r.Get(ctx, appid)
	if err != nil {
		return nil, nil, err
	}
	t, err := a.Token(ctx)
	if err != nil {
		return nil, a, err
	}
	return t, a, nil
}

// Token returns a usable token of the authorizer; a revoked or forgotten
// one is dropped from the registry. With Rejected and Confirm, an
// Authorizer is a credential the request path can use directly.
func (a *Authorizer) Token(ctx context.Context) (*Token, error) {
	t, err := a.cache.Token(ctx)
	if err != nil && (errors.Is(err, ErrAuthorizerRevoked) || errors.Is(err, ErrUnknownAuthorizer)) {
		a.reg.remove(a)
	}
	return t, err
}

// RejectedOn is Cache.RejectedOn of the authorizer's token.
func (a *Authorizer) RejectedOn(ctx context.Context, t *Token, api string) (*Token, bool, error) {
	return a.cache.RejectedOn(ctx, t, api)
}

// Confirm is Cache.Confirm of the authorizer's token.
func (a *Authorizer) Confirm(t *Token) { a.cache.Confirm(t) }

func (r *Registry) newAuthorizer(appid string) *Authorizer {
	a := &Authorizer{src: AuthorizerTokenSource{P: r.p, AppID: appid}, reg: r}
	a.cache = New(Config{
		Name:         "authorizer:" + appid,
		AppID:        appid,
		Source:       &a.src,
		Shared:       r.cfg.Shared,
		Scheduler:    r.cfg.Scheduler,
		Window:       r.cfg.Window,
		FetchTimeout: r.cfg.FetchTimeout,
		MinAge:       r.cfg.MinAge,
		Ceiling:      r.cfg.Ceiling,
		Now:          r.cfg.Now,
		Rand:         r.cfg.Rand,
		Logger:       r.cfg.Logger,
		Observer:     r.cfg.Observer,
		Sleep:        r.cfg.Sleep,
		PeekInterval: -1,
		Spread:       true,
	})
	return a
}

// insert adds a unless an entry is there, and returns the one kept.
func (r *Registry) insert(a *Authorizer) *Authorizer {
	sh := r.shard(a.src.AppID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old := sh.m.Load()
	if old != nil {
		if e := (*old)[a.src.AppID]; e != nil {
			a.cache.Close()
			return e
		}
	}
	m := make(map[string]*Authorizer, mapLen(old)+1)
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	m[a.src.AppID] = a
	sh.m.Store(&m)
	r.n.Add(1)
	return a
}

func mapLen(m *map[string]*Authorizer) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

// remove drops a (only that entry) and closes its cache.
func (r *Registry) remove(a *Authorizer) {
	sh := r.shard(a.src.AppID)
	sh.mu.Lock()
	old := sh.m.Load()
	if old == nil || (*old)[a.src.AppID] != a {
		sh.mu.Unlock()
		return
	}
	m := make(map[string]*Authorizer, len(*old))
	for k, v := range *old {
		if v != a {
			m[k] = v
		}
	}
	sh.m.Store(&m)
	r.n.Add(-1)
	sh.mu.Unlock()
	a.cache.Close()
}

// Authorize stores an authorization (from api_query_auth, on an
// authorized or updateauthorized event) durably: the refresh token
// first, then the first access token so that it is not fetched again.
// An error means the refresh token may not be stored: the caller must
// not acknowledge the event, so WeChat pushes it again.
func (r *Registry) Authorize(ctx context.Context, au *Authorization) error {
	if !ValidAppID(au.AuthorizerAppID) || au.RefreshToken == "" {
		return errors.New("authorization without a valid authorizer_appid or refresh token")
	}
	a := r.Lookup(au.AuthorizerAppID)
	if a == nil {
		a = r.insert(r.newAuthorizer(au.AuthorizerAppID))
	}
	if err := a.cache.Aux().Put(ctx, AuxRefreshToken, []byte(au.RefreshToken)); err != nil {
		return fmt.Errorf("storing the refresh token of authorizer %s: %w", au.AuthorizerAppID, err)
	}
	a.src.unsaved.Store(nil)
	a.cache.ClearBackoff()
	if au.Token != nil {
		a.cache.Offer(ctx, au.Token)
	}
	return nil
}

// Forget erases an authorizer's refresh token (the store's Aux has no
// delete: an empty value marks it forgotten) and drops its entry. Peers
// that hold a cache for it drop theirs on its next failure.
func (r *Registry) Forget(ctx context.Context, appid, reason string) error {
	if !ValidAppID(appid) {
		return errors.New("invalid authorizer appid")
	}
	a := r.Lookup(appid)
	tmp := a == nil
	if tmp {
		a = r.newAuthorizer(appid)
	}
	err := a.cache.Aux().Put(ctx, AuxRefreshToken, nil)
	if tmp {
		a.cache.Close()
	} else {
		r.remove(a)
	}
	r.p.events().Forgotten(reason)
	return err
}

// AuthorizerStatus is one line of the paged status view. No token.
type AuthorizerStatus struct {
	AppID string `json:"authorizer_appid"`
	Status
	RefreshUnsaved bool `json:"refresh_token_unsaved,omitempty"`
}

// Page lists up to limit authorizers in appid order after cursor (""
// for the first page) and the cursor of the next page ("" at the end).
func (r *Registry) Page(cursor string, limit int) ([]AuthorizerStatus, string) {
	if limit <= 0 {
		limit = 100
	}
	var ids []*Authorizer
	for i := range r.shards {
		if m := r.shards[i].m.Load(); m != nil {
			for k, a := range *m {
				if k > cursor {
					ids = append(ids, a)
				}
			}
		}
	}
	slices.SortFunc(ids, func(a, b *Authorizer) int {
		switch {
		case a.src.AppID < b.src.AppID:
			return -1
		case a.src.AppID > b.src.AppID:
			return 1
		}
		return 0
	})
	next := ""
	if len(ids) > limit {
		ids = ids[:limit]
		next = ids[limit-1].src.AppID
	}
	out := make([]AuthorizerStatus, len(ids))
	for i, a := range ids {
		out[i] = AuthorizerStatus{AppID: a.src.AppID, Status: a.cache.Status(), RefreshUnsaved: a.src.unsaved.Load() != nil}
	}
	return out, next
}

// Close closes every authorizer's cache.
func (r *Registry) Close() error {
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		if m := sh.m.Load(); m != nil {
			for _, a := range *m {
				a.cache.Close()
			}
		}
		sh.m.Store(nil)
		sh.mu.Unlock()
	}
	r.n.Store(0)
	return nil
}
