package wechat

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

const (
	defaultMaxBuffered     = 64 << 20
	defaultBodyReadTimeout = 30 * time.Second
	// firstBodyChunk is the first buffer of a body: a caller that
	// announces 10 MiB and sends one byte costs this, not 10 MiB.
	firstBodyChunk = 16 << 10
)

// bufferedBytes counts request bytes held for replay across every wechat
// transport of the process, so the cap bounds the gateway, not each block.
var bufferedBytes atomic.Int64

// reservation is one request's share of bufferedBytes, given back when the
// request finishes.
type reservation struct {
	limit int64
	held  atomic.Int64
}

func (r *reservation) take(n int64) bool {
	if bufferedBytes.Add(n) > r.limit {
		bufferedBytes.Add(-n)
		return false
	}
	r.held.Add(n)
	return true
}

func (r *reservation) release() { bufferedBytes.Add(-r.held.Swap(0)) }

func (t *Transport) maxBuffered() int64 {
	if t.MaxBufferedBytes > 0 {
		return t.MaxBufferedBytes
	}
	return defaultMaxBuffered
}

func (t *Transport) bodyReadTimeout() time.Duration {
	if t.BodyReadTimeout > 0 {
		return time.Duration(t.BodyReadTimeout)
	}
	return defaultBodyReadTimeout
}

// connKey holds the client connection, so a body read can carry a deadline.
type connKey struct{}

// provisionRequestPath sets up what the request path needs beyond the
// token: the ring of sent tokens, and the client connection in each
// request's context (Go offers no other way to time out an HTTP/1 body
// read from a transport).
func (t *Transport) provisionRequestPath(ctx caddy.Context) {
	t.sent = new(tokenRing)
	t.needleCache = new(atomic.Pointer[needleSet])
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv != nil {
		srv.RegisterConnContext(func(c context.Context, conn net.Conn) context.Context {
			if c.Value(connKey{}) != nil {
				return c
			}
			return context.WithValue(c, connKey{}, conn)
		})
	}
}

// readBody holds a request body of at most max_replay_body bytes so it can
// be replayed. The buffer grows with the bytes that arrive, within the
// gateway-wide max_buffered_bytes; a body past either limit streams
// through without the replay, and is never refused. Every read must make
// progress within body_read_timeout.
func (t *Transport) readBody(req *http.Request) (*replayBody, bool, error) {
	if req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
		return emptyBody, true, nil
	}
	if data, ok := caddyhttp.GetVar(req.Context(), replayVar).([]byte); ok {
		return &replayBody{data: data}, true, nil // reverse_proxy's retry
	}
	body := timeBody(req, t.bodyReadTimeout())
	limit := t.maxReplay()
	if req.ContentLength > limit {
		return &replayBody{stream: body, length: req.ContentLength}, false, nil
	}
	want := req.ContentLength // read exactly this much
	if want < 0 {
		want = limit + 1 // unknown length: one byte past the limit tells
	}
	res := &reservation{limit: t.maxBuffered()}
	context.AfterFunc(req.Context(), res.release)
	spill := func(buf []byte) (*replayBody, bool, error) {
		stream := &prefixBody{Reader: io.MultiReader(bytes.NewReader(buf), body), c: body}
		return &replayBody{stream: stream, length: req.ContentLength}, false, nil
	}
	size := min(want, firstBodyChunk)
	if !res.take(size) {
		return &replayBody{stream: body, length: req.ContentLength}, false, nil
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) >= want {
				break
			}
			grow := min(want, 2*int64(cap(buf)))
			if !res.take(grow - int64(cap(buf))) {
				return spill(buf)
			}
			nb := make([]byte, len(buf), grow)
			copy(nb, buf)
			buf = nb
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, false, err
		}
	}
	if req.ContentLength > 0 && int64(len(buf)) < req.ContentLength {
		return nil, false, io.ErrUnexpectedEOF
	}
	if req.ContentLength < 0 && int64(len(buf)) > limit {
		return spill(buf)
	}
	caddyhttp.SetVar(req.Context(), replayVar, buf)
	return &replayBody{data: buf}, true, nil
}

// timedBody aborts a body that makes no progress for d. On HTTP/1 that
// is a read deadline on the client connection, lifted again when the body
// ends, so the keep-alive connection is unaffected; on HTTP/2 and 3, where
// the connection is shared, a timer closes the stream's body instead.
type timedBody struct {
	rc    io.ReadCloser
	conn  net.Conn
	d     time.Duration
	timer *time.Timer
	done  atomic.Bool
}

func timeBody(req *http.Request, d time.Duration) io.ReadCloser {
	b := &timedBody{rc: req.Body, d: d}
	if req.ProtoMajor == 1 {
		c, ok := req.Context().Value(connKey{}).(net.Conn)
		if !ok {
			return req.Body // no way to interrupt a read: leave it
		}
		b.conn = c
	} else {
		b.timer = time.AfterFunc(d, func() { req.Body.Close() })
	}
	return b
}

func (b *timedBody) Read(p []byte) (int, error) {
	if b.done.Load() {
		return b.rc.Read(p)
	}
	if b.conn != nil {
		_ = b.conn.SetReadDeadline(time.Now().Add(b.d))
	} else {
		b.timer.Reset(b.d)
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish()
		if b.conn != nil {
			_ = b.conn.SetReadDeadline(time.Time{}) // also after a racing Close
		}
	}
	return n, err
}

func (b *timedBody) finish() {
	if b.done.Swap(true) {
		return
	}
	if b.conn != nil {
		_ = b.conn.SetReadDeadline(time.Time{})
	} else {
		b.timer.Stop()
	}
}

func (b *timedBody) Close() error {
	b.finish()
	return b.rc.Close()
}
