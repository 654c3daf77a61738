package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
)

// tickets holds each account's ticket caches across reloads, keyed by the
// account's pool key and the ticket type. With memcache, a ticket is
// shared across the cluster like the token: the same lease,
// compare-and-swap and wait, under the key base:ticket:<type>.
var tickets = caddy.NewUsagePool()

// ticketCache is one ticket of one account, fetched once per process
// (singleflight), once per cluster with memcache, and renewed ahead of
// expiry by the request that notices.
type ticketCache struct {
	typ string
	cur atomic.Pointer[ticketEntry]
	sf  singleflight.Group

	mu      sync.Mutex
	lastErr error
	retryAt time.Time
}

type ticketEntry struct {
	value          string // never logged
	renewAt, useBy time.Time
	shared         *tokenEntry // the same ticket in the form memcache stores
}

// ticketAhead is how long before expiry a request starts a background
// renewal; it keeps signing off the slow path in steady state.
const ticketAhead = 10 * time.Minute

func (*ticketCache) Destruct() error { return nil }

// get returns a usable ticket, starting a background renewal when the
// current one is near its end, and waiting only when there is none.
func (c *ticketCache) get(ctx context.Context, a *account, timeout time.Duration) (*ticketEntry, error) {
	if e := c.cur.Load(); e != nil && a.now().Before(e.useBy) {
		if !a.now().Before(e.renewAt) {
			c.sf.DoChan("t", func() (any, error) { return c.load(a, timeout, true) })
		}
		return e, nil
	}
	ch := c.sf.DoChan("t", func() (any, error) { return c.load(a, timeout, false) })
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*ticketEntry), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// current is the ticket this process holds, for the cluster protocol.
func (c *ticketCache) current() *tokenEntry {
	if e := c.cur.Load(); e != nil {
		return e.shared
	}
	return nil
}

// load gets a ticket, detached from any client: from a peer through
// memcache, or from WeChat. A short backoff after a failure keeps a broken
// ticket endpoint from being hammered.
func (c *ticketCache) load(a *account, timeout time.Duration, ahead bool) (*ticketEntry, error) {
	c.mu.Lock()
	if c.lastErr != nil && a.now().Before(c.retryAt) {
		err := c.lastErr
		c.mu.Unlock()
		return nil, err
	}
	c.mu.Unlock()
	fetch := func(ctx context.Context, _ string) (*tokenEntry, error) {
		start := a.now()
		value, expiresIn, err := c.fetch(ctx, a)
		if err != nil {
			return nil, err
		}
		a.log().Info("wechat: ticket fetched", zap.String("appid", a.appid), zap.String("type", c.typ), zap.Int64("expires_in", expiresIn))
		// Tickets live by the token's rules: the same clamping of
		// expires_in and the same safety margin.
		return newEntry(value, expiresIn, start, "fetch"), nil
	}
	var te *tokenEntry
	var err error
	if ms, ok := a.store.(*memcacheStore); ok {
		ctx, cancel := context.WithTimeout(context.Background(), max(timeout, a.loadTimeout()))
		te, err = ms.slot("ticket:"+c.typ, fetch, c.current).obtain(ctx, "", ahead)
		cancel()
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		te, err = fetch(ctx, "")
		cancel()
	}
	c.mu.Lock()
	c.lastErr, c.retryAt = err, a.now().Add(backoffBase)
	c.mu.Unlock()
	if err != nil {
		a.log().Error("wechat: ticket fetch failed", zap.String("appid", a.appid), zap.String("type", c.typ), zap.String("error", err.Error()))
		return nil, err
	}
	ttl := te.ExpiresAt.Sub(te.FetchedAt)
	e := &ticketEntry{value: te.Value, useBy: te.useBy, renewAt: te.ExpiresAt.Add(-min(ticketAhead, ttl/2)), shared: te}
	c.cur.Store(e)
	return e, nil
}

// fetch calls getticket with the account's token. A token error there
// means the token went bad underneath: drop it (compare and invalidate),
// get a fresh one and try once more.
func (c *ticketCache) fetch(ctx context.Context, a *account) (string, int64, error) {
	tok, err := a.Token(ctx)
	if err != nil {
		return "", 0, err
	}
	v, n, err := c.getticket(ctx, a, tok)
	var we *wechatError
	if !errors.As(err, &we) || !isTokenErrcode(we.Code) {
		return v, n, err
	}
	a.Invalidate(tok)
	fresh, err := a.Token(ctx)
	if err != nil {
		return "", 0, err
	}
	if fresh.Value == tok.Value {
		return "", 0, we
	}
	v, n, err = c.getticket(ctx, a, fresh)
	if errors.As(err, &we) && isTokenErrcode(we.Code) {
		a.Invalidate(fresh)
	}
	return v, n, err
}

// getticket asks each upstream in turn; a network error or 5xx moves on,
// an errcode does not. Errors are rebuilt so they cannot quote the URL,
// which holds the token.
func (c *ticketCache) getticket(ctx context.Context, a *account, tok *tokenEntry) (string, int64, error) {
	f := a.fetcher.Load()
	var errs []error
	for _, base := range f.bases {
		u := *base
		u.Path = "/cgi-bin/ticket/getticket"
		u.RawQuery = "access_token=" + tok.escaped + "&type=" + c.typ
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return "", 0, errors.New("building the getticket request failed")
		}
		resp, err := f.rt.RoundTrip(req)
		if err != nil {
			if ctx.Err() != nil {
				return "", 0, ctx.Err()
			}
			msg := strings.ReplaceAll(f.redact(err).Error(), tok.Value, "[token]")
			errs = append(errs, fmt.Errorf("getticket %s: %s", base.Host, strings.ReplaceAll(msg, tok.escaped, "[token]")))
			continue
		}
		var ans struct {
			ErrCode   int         `json:"errcode"`
			ErrMsg    string      `json:"errmsg"`
			Ticket    string      `json:"ticket"`
			ExpiresIn json.Number `json:"expires_in"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, maxTokenBody)).Decode(&ans)
		resp.Body.Close()
		switch {
		case resp.StatusCode >= 500:
			errs = append(errs, fmt.Errorf("getticket %s answered HTTP %d", base.Host, resp.StatusCode))
			continue
		case err != nil || resp.StatusCode != http.StatusOK:
			return "", 0, fmt.Errorf("getticket %s answered HTTP %d, not a ticket", base.Host, resp.StatusCode)
		case ans.ErrCode != 0:
			return "", 0, &wechatError{Code: ans.ErrCode, Msg: "getticket: " + ans.ErrMsg}
		case ans.Ticket == "":
			return "", 0, fmt.Errorf("getticket %s answered no ticket", base.Host)
		}
		n, _ := ans.ExpiresIn.Int64()
		return ans.Ticket, n, nil
	}
	return "", 0, errors.Join(errs...)
}
