package wechat

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// refresher renews the account's token in the background before it
// expires, so that in steady state no request ever waits for a fetch. One
// goroutine per account; it lives as long as the account's pool entry.
type refresher struct {
	a *account

	mu      sync.Mutex
	running bool
	stopCh  chan struct{}
	done    chan struct{}
	wake    chan struct{}
	due     time.Time // when the current token should be renewed

	// rand returns a number in [0,1): jitter, replaceable in tests.
	rand func() float64
}

// pollInterval is how often an instance with a shared store looks for a
// token a peer has stored, so it switches well within WeChat's 5-minute
// overlap of old and new classic tokens.
const pollInterval = time.Minute

func newRefresher(a *account) *refresher {
	return &refresher{a: a, wake: make(chan struct{}, 1), rand: rand.Float64}
}

// renewAt picks when to renew e. Stable tokens are renewed inside WeChat's
// last-5-minutes window, where a normal fetch returns the next token;
// classic ones about 10 minutes early. Jitter spreads a cluster's
// instances so that one of them renews and the others pick it up.
func (r *refresher) renewAt(e *tokenEntry) time.Time {
	ttl := e.ExpiresAt.Sub(e.FetchedAt)
	var early time.Duration
	if r.a.api == tokenAPIClassic {
		early = 9*time.Minute + time.Duration(r.rand()*float64(2*time.Minute))
	} else {
		early = time.Minute + time.Duration(r.rand()*float64(3*time.Minute+30*time.Second))
	}
	if early > ttl/2 {
		early = ttl / 2 // short-lived tokens (tests, odd expires_in)
	}
	return e.ExpiresAt.Add(-early)
}

// schedule notes a newly published token.
func (r *refresher) schedule(e *tokenEntry) {
	r.mu.Lock()
	r.due = r.renewAt(e)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// next returns when the loop should act next.
func (r *refresher) next(now time.Time) time.Time {
	r.mu.Lock()
	due := r.due
	r.mu.Unlock()
	if due.IsZero() {
		due = now.Add(24 * time.Hour) // no token yet: the first request fetches
	}
	a := r.a
	a.mu.Lock()
	if a.lastErr != nil && a.retryAt.After(due) {
		due = a.retryAt // back off after a failed renewal
	}
	a.mu.Unlock()
	if a.store != nil && now.Add(pollInterval).Before(due) {
		due = now.Add(pollInterval)
	}
	return due
}

// tick does what is due at now: renew the token, or look in the shared
// store for one a peer renewed.
func (r *refresher) tick(now time.Time) {
	a := r.a
	cur := a.cur.Load()
	r.mu.Lock()
	renew := !r.due.IsZero() && !now.Before(r.due)
	r.mu.Unlock()
	if !renew {
		if a.store == nil || cur == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.fetchTimeout())
		defer cancel()
		if e, ok := a.store.peek(ctx); ok && e.FetchedAt.After(cur.FetchedAt) && e.Value != a.badToken() && now.Before(e.useBy) {
			a.publish(e)
		}
		return
	}
	if a.backoffErr() != nil {
		return
	}
	// Join any fetch already in flight; a failure is recorded by load
	// and retried after the backoff.
	<-a.sf.DoChan("token", func() (any, error) { return a.load(true) })
}

// start runs the loop if it is not running. Every provision calls it; the
// pool's Destruct stops it.
func (r *refresher) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return
	}
	r.running = true
	r.stopCh = make(chan struct{})
	r.done = make(chan struct{})
	go r.loop(r.stopCh, r.done)
}

func (r *refresher) loop(stop, done chan struct{}) {
	defer close(done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := r.a.now()
		timer.Reset(max(r.next(now).Sub(now), 10*time.Millisecond))
		select {
		case <-stop:
			return
		case <-r.wake:
			continue
		case <-timer.C:
			r.tick(r.a.now())
		}
	}
}

func (r *refresher) isRunning() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running
}

// stop ends the loop and waits for it, so no goroutine outlives the
// account.
func (r *refresher) stop() {
	r.mu.Lock()
	if !r.running {
		r.mu.Unlock()
		return
	}
	r.running = false
	stop, done := r.stopCh, r.done
	r.mu.Unlock()
	close(stop)
	<-done
}
