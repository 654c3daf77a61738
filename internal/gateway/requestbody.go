package gateway

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

const (
	DefaultMaxBuffered     = 64 << 20
	DefaultBodyReadTimeout = 30 * time.Second
	// FirstBodyChunk is the first buffer of a body: a caller that
	// announces 10 MiB and sends one byte costs this, not 10 MiB.
	FirstBodyChunk = 16 << 10
)

// bufferedBytes counts request bytes held for replay across every wechat
// transport of the process, so the cap bounds the gateway, not each block.
var bufferedBytes atomic.Int64

// BufferedBytes is what request bodies hold for replay now, across the
// process: 0 once every request has ended (tests watch it for leaks).
func BufferedBytes() int64 { return bufferedBytes.Load() }

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

// bufferBody holds a request body of at most limit (max_replay_body) bytes
// so it can be replayed. The buffer grows with the bytes that arrive,
// within the gateway-wide maxBuffered (max_buffered_bytes); a body past
// either limit streams through without the replay, and is never refused.
// Every read must make progress within idle (body_read_timeout).
func bufferBody(req *http.Request, srv Server, limit, maxBuffered int64, idle time.Duration) (*replayBody, bool, error) {
	if req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
		return emptyBody, true, nil
	}
	if srv != nil {
		if data, ok := srv.KeptBody(req.Context()); ok {
			return &replayBody{data: data}, true, nil // reverse_proxy's retry
		}
		srv.LimitBodyIdle(req, idle)
	}
	body := req.Body
	if req.ContentLength > limit {
		return &replayBody{stream: body, length: req.ContentLength}, false, nil
	}
	want := req.ContentLength // read exactly this much
	if want < 0 {
		want = limit + 1 // unknown length: one byte past the limit tells
	}
	res := &reservation{limit: maxBuffered}
	context.AfterFunc(req.Context(), res.release)
	size := min(want, FirstBodyChunk)
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
				return spill(req, body, buf)
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
		return spill(req, body, buf)
	}
	if srv != nil {
		srv.KeepBody(req.Context(), buf)
	}
	return &replayBody{data: buf}, true, nil
}

// spill streams what was read followed by the rest, giving up the replay.
func spill(req *http.Request, body io.ReadCloser, buf []byte) (*replayBody, bool, error) {
	stream := &prefixBody{Reader: io.MultiReader(bytes.NewReader(buf), body), c: body}
	return &replayBody{stream: stream, length: req.ContentLength}, false, nil
}
