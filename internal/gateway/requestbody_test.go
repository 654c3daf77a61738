package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"
)

// These tests pin bufferBody (requestbody.go) at its exact boundaries, as
// plain function calls, so that the mutation run (./mutate.sh) checks
// every comparison of the request body's path. bufferedBytes is
// process-global: none of them runs in parallel, and each measures the
// reservation relative to what it found.

var (
	errEmptyRead  = errors.New("test body: Read with an empty buffer (no progress possible)")
	errPastLength = errors.New("test body: Read past the announced length")
)

// stepBody hands out its bytes at most step per Read, like a body arriving
// in packets. It fails a Read that cannot make progress: one with an empty
// buffer, or, when exact, one past the end of a body whose length was
// announced (on a live connection that read would wait for bytes the
// client never sends).
type stepBody struct {
	data   []byte
	step   int
	exact  bool
	reads  int
	closed bool
}

func (s *stepBody) Read(p []byte) (int, error) {
	s.reads++
	if len(p) == 0 {
		return 0, errEmptyRead
	}
	if len(s.data) == 0 {
		if s.exact {
			return 0, errPastLength
		}
		return 0, io.EOF
	}
	n := min(len(p), s.step, len(s.data))
	copy(p, s.data[:n])
	s.data = s.data[n:]
	return n, nil
}

func (s *stepBody) Close() error { s.closed = true; return nil }

// payload is n distinct-looking bytes, so that a reordered or truncated
// copy cannot compare equal.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26 + i/26%7)
	}
	return b
}

// bodyBench records bufferedBytes at the start of a test and, at its end,
// ends every request it made and checks that their reservations all came
// back.
type bodyBench struct {
	t    *testing.T
	base int64
}

func newBodyBench(t *testing.T) *bodyBench {
	t.Helper()
	b := &bodyBench{t: t, base: bufferedBytes.Load()}
	// Registered first, so it runs after every request's cancel.
	t.Cleanup(func() { b.waitReleased() })
	return b
}

// held is what this test's requests reserve at the moment.
func (b *bodyBench) held() int64 { return bufferedBytes.Load() - b.base }

// waitReleased waits for the reservations to be given back (the release
// runs in a goroutine of context.AfterFunc); the deadline only bounds a
// failure, it is not a timing assertion.
func (b *bodyBench) waitReleased() {
	b.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.held() != 0 {
		if time.Now().After(deadline) {
			b.t.Errorf("%d request bytes still reserved after the requests ended", b.held())
			bufferedBytes.Store(b.base)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// request is a proxied request carrying body with the given Content-Length
// and Caddy's vars map (where reverse_proxy's retries find the replay
// copy). It ends when the test does, or when end is called.
func (b *bodyBench) request(body io.ReadCloser, length int64) (req *http.Request, end func()) {
	ctx := context.WithValue(context.Background(), keptKey{}, new([]byte))
	ctx, cancel := context.WithCancel(ctx)
	b.t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://api.weixin.qq.com/cgi-bin/x", nil)
	if err != nil {
		b.t.Fatal(err)
	}
	req.Body, req.ContentLength = body, length
	return req, cancel
}

// streamed reads a non-replayable body to its end and checks that the
// upstream gets every byte the client sent, in order.
func streamed(t *testing.T, rb *replayBody, want []byte, length int64) {
	t.Helper()
	if rb.data != nil || rb.stream == nil {
		t.Fatalf("want a stream, got data %d bytes, stream %v", len(rb.data), rb.stream)
	}
	if rb.length != length {
		t.Fatalf("stream length %d, want %d", rb.length, length)
	}
	got, err := io.ReadAll(rb.stream)
	if err != nil && !errors.Is(err, errPastLength) {
		t.Fatalf("reading the stream: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("streamed %d bytes, not the %d the client sent", len(got), len(want))
	}
}

// No body, http.NoBody and an announced zero length are all the shared
// empty body, replayable, reserving nothing.
func TestBufferBodyEmpty(t *testing.T) {
	b := newBodyBench(t)
	for _, tc := range []struct {
		name   string
		body   io.ReadCloser
		length int64
	}{
		{"nil", nil, 0},
		{"NoBody", http.NoBody, 0},
		{"zero length", &stepBody{data: []byte("x"), step: 1}, 0},
	} {
		req, _ := b.request(tc.body, tc.length)
		rb, ok, err := bufferBody(req, testServer, 10, b.base+10, time.Second)
		if err != nil || !ok || rb != emptyBody {
			t.Errorf("%s: bufferBody = %p, %v, %v; want the empty body, replayable", tc.name, rb, ok, err)
		}
	}
	if b.held() != 0 {
		t.Errorf("empty bodies reserved %d bytes", b.held())
	}
}

// A body of exactly max_replay_body bytes is replayable, whether its
// length was announced or not; one byte more streams. A known length
// reserves exactly itself and is read no further than announced.
func TestBufferBodyReplayLimitBoundary(t *testing.T) {
	const limit = 10
	for _, tc := range []struct {
		name       string
		size       int
		length     int64 // -1: unknown (chunked)
		replayable bool
		reserved   int64 // while the request lasts
		reads      int   // -1: not checked
	}{
		{"known, one under", limit - 1, limit - 1, true, limit - 1, -1},
		{"known, at the limit", limit, limit, true, limit, -1},
		{"known, one over", limit + 1, limit + 1, false, 0, 0}, // not even read
		{"unknown, one under", limit - 1, -1, true, limit + 1, -1},
		{"unknown, at the limit", limit, -1, true, limit + 1, -1},
		{"unknown, one over", limit + 1, -1, false, limit + 1, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBodyBench(t)
			data := payload(tc.size)
			body := &stepBody{data: bytes.Clone(data), step: 3, exact: tc.length >= 0}
			req, _ := b.request(body, tc.length)
			rb, ok, err := bufferBody(req, testServer, limit, b.base+1<<20, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.replayable {
				t.Fatalf("replayable = %v, want %v", ok, tc.replayable)
			}
			if got := b.held(); got != tc.reserved {
				t.Errorf("reserved %d bytes, want %d", got, tc.reserved)
			}
			if tc.reads >= 0 && body.reads != tc.reads {
				t.Errorf("%d reads of the body before the upstream got it, want %d", body.reads, tc.reads)
			}
			if !ok {
				streamed(t, rb, data, tc.length)
				return
			}
			if !bytes.Equal(rb.data, data) {
				t.Fatalf("buffered %q, want %q", rb.data, data)
			}
			if v, _ := testServer.KeptBody(req.Context()); !bytes.Equal(v, data) {
				t.Fatalf("replay copy for reverse_proxy's retry %q, want %q", v, data)
			}
		})
	}
}

// The buffer starts at firstBodyChunk and doubles, capped by what is
// wanted: the reservation is exactly the buffer's size, and a body of a
// known length is never read past it.
func TestBufferBodyGrowth(t *testing.T) {
	const limit = 100_000
	for _, tc := range []struct {
		name     string
		size     int
		length   int64
		reserved int64
	}{
		{"known, first chunk exactly", FirstBodyChunk, FirstBodyChunk, FirstBodyChunk},
		{"known, one past the first chunk", FirstBodyChunk + 1, FirstBodyChunk + 1, FirstBodyChunk + 1},
		{"known, within the second chunk", 20_000, 20_000, 20_000},
		{"known, third chunk", 40_000, 40_000, 40_000},
		{"unknown, within the second chunk", 20_000, -1, 2 * FirstBodyChunk},
		{"unknown, first chunk exactly", FirstBodyChunk, -1, 2 * FirstBodyChunk},
		{"unknown, three chunks exactly", 3 * FirstBodyChunk, -1, 4 * FirstBodyChunk},
		{"unknown, at the limit", limit, -1, limit + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBodyBench(t)
			data := payload(tc.size)
			req, _ := b.request(&stepBody{data: bytes.Clone(data), step: 4096, exact: tc.length >= 0}, tc.length)
			rb, ok, err := bufferBody(req, testServer, limit, b.base+1<<20, time.Second)
			if err != nil || !ok {
				t.Fatalf("bufferBody: replayable %v, %v", ok, err)
			}
			if !bytes.Equal(rb.data, data) {
				t.Fatalf("buffered %d bytes, not the %d sent", len(rb.data), len(data))
			}
			if got := b.held(); got != tc.reserved {
				t.Errorf("reserved %d bytes, want %d", got, tc.reserved)
			}
		})
	}
}

// A body shorter than its Content-Length is an error, not a shorter
// request; a read error is the caller's.
func TestBufferBodyShortOrBroken(t *testing.T) {
	b := newBodyBench(t)
	req, _ := b.request(&stepBody{data: payload(5), step: 2}, 10)
	if _, _, err := bufferBody(req, testServer, 100, b.base+100, time.Second); err != io.ErrUnexpectedEOF {
		t.Errorf("5 bytes of an announced 10: err %v, want io.ErrUnexpectedEOF", err)
	}
	req, _ = b.request(&stepBody{data: nil, step: 2}, 1)
	if _, _, err := bufferBody(req, testServer, 100, b.base+100, time.Second); err != io.ErrUnexpectedEOF {
		t.Errorf("no byte of an announced 1: err %v, want io.ErrUnexpectedEOF", err)
	}
	boom := errors.New("connection reset")
	req, _ = b.request(io.NopCloser(io.MultiReader(bytes.NewReader(payload(3)), iotestErr{boom})), -1)
	if _, _, err := bufferBody(req, testServer, 100, b.base+1000, time.Second); err != boom {
		t.Errorf("a read error: err %v, want it returned", err)
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

// max_buffered_bytes bounds all requests together: a reservation reaching
// it exactly fits, one byte more streams (and takes nothing), and a body
// whose buffer cannot grow within it streams what was read, then the rest.
func TestBufferBodyGatewayCap(t *testing.T) {
	b := newBodyBench(t)
	data := payload(10)

	req, _ := b.request(&stepBody{data: bytes.Clone(data), step: 4, exact: true}, 10)
	rb, ok, err := bufferBody(req, testServer, 100, b.base+10, time.Second)
	if err != nil || !ok || !bytes.Equal(rb.data, data) {
		t.Fatalf("a body reaching the cap exactly: replayable %v, %v", ok, err)
	}
	if b.held() != 10 {
		t.Fatalf("reserved %d, want 10", b.held())
	}

	// The cap is now full: the next body, even of one byte, streams.
	req, _ = b.request(&stepBody{data: []byte("z"), step: 4, exact: true}, 1)
	rb, ok, err = bufferBody(req, testServer, 100, b.base+10, time.Second)
	if err != nil || ok {
		t.Fatalf("a body past the cap: replayable %v, %v", ok, err)
	}
	streamed(t, rb, []byte("z"), 1)
	if b.held() != 10 {
		t.Fatalf("a refused reservation left %d bytes held, want the first body's 10", b.held())
	}

	// Unknown length, growth refused: the first chunk is read, the buffer
	// cannot double within the cap, and the body spills.
	big := payload(FirstBodyChunk + 5000)
	req, _ = b.request(&stepBody{data: bytes.Clone(big), step: 4096}, -1)
	rb, ok, err = bufferBody(req, testServer, 1<<20, b.base+10+FirstBodyChunk+5000, time.Second)
	if err != nil || ok {
		t.Fatalf("a body whose buffer cannot grow: replayable %v, %v", ok, err)
	}
	if b.held() != 10+FirstBodyChunk {
		t.Fatalf("held %d, want the first body and one chunk (%d)", b.held(), 10+FirstBodyChunk)
	}
	streamed(t, rb, big, -1)
}

// Reservations last as long as their request: ending it gives them back.
func TestBufferBodyReleasedAtRequestEnd(t *testing.T) {
	b := newBodyBench(t)
	req, end := b.request(&stepBody{data: payload(300), step: 100, exact: true}, 300)
	if _, ok, err := bufferBody(req, testServer, 1000, b.base+1000, time.Second); err != nil || !ok {
		t.Fatalf("replayable %v, %v", ok, err)
	}
	if b.held() != 300 {
		t.Fatalf("reserved %d, want 300", b.held())
	}
	end()
	b.waitReleased()
	// What was given back is available again, to the byte.
	req, _ = b.request(&stepBody{data: payload(1000), step: 100, exact: true}, 1000)
	if _, ok, err := bufferBody(req, testServer, 1000, b.base+1000, time.Second); err != nil || !ok {
		t.Fatalf("after the release, a body of the whole cap: replayable %v, %v", ok, err)
	}
}

// reverse_proxy's retry of a request finds the body this transport
// already drained, and sends it again without reading the client's body.
func TestBufferBodyRetryReusesCopy(t *testing.T) {
	b := newBodyBench(t)
	data := payload(7)
	body := &stepBody{data: bytes.Clone(data), step: 7, exact: true}
	req, _ := b.request(body, 7)
	if _, ok, err := bufferBody(req, testServer, 10, b.base+10, time.Second); err != nil || !ok {
		t.Fatalf("replayable %v, %v", ok, err)
	}
	reads := body.reads
	rb, ok, err := bufferBody(req, testServer, 10, b.base+10, time.Second)
	if err != nil || !ok || !bytes.Equal(rb.data, data) || body.reads != reads {
		t.Fatalf("retry: replayable %v, %v, data %q, %d more reads", ok, err, rb.data, body.reads-reads)
	}
	if b.held() != 7 {
		t.Errorf("the retry reserved again: %d held, want 7", b.held())
	}
}

// keptKey holds, in a test request's context, where testServer keeps a
// drained body (what Caddy's vars do for the root's gateway.Server).
type keptKey struct{}

type keptServer struct{}

var testServer Server = keptServer{}

func (keptServer) KeptBody(ctx context.Context) ([]byte, bool) {
	p, _ := ctx.Value(keptKey{}).(*[]byte)
	if p == nil || *p == nil {
		return nil, false
	}
	return *p, true
}

func (keptServer) KeepBody(ctx context.Context, b []byte) {
	if p, _ := ctx.Value(keptKey{}).(*[]byte); p != nil {
		*p = b
	}
}

func (keptServer) LimitBodyIdle(*http.Request, time.Duration) {}
