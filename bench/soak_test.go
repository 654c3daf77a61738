package main

import (
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"
)

const s = time.Second

// What a soak request counts as: only a transport error inside a reload's
// window, and a token errcode inside a glitch, are excused.
func TestSoakClassify(t *testing.T) {
	ex := excuses{reloads: []window{reloadWindow(10*s, 10*s+50*time.Millisecond)}, glitches: []window{glitchWindow(20*s, 22*s)}}
	cases := []struct {
		name string
		o    outcome
		want class
	}{
		{"ok", outcome{at: s, status: 200}, classOK},
		{"40001 reached the client", outcome{at: s, status: 200, errcode: 40001}, classToken},
		{"42001 reached the client", outcome{at: s, status: 200, errcode: 42001}, classToken},
		{"41001 reached the client", outcome{at: s, status: 200, errcode: 41001}, classToken},
		{"40014 reached the client", outcome{at: s, status: 200, errcode: 40014}, classToken},
		{"another errcode", outcome{at: s, status: 200, errcode: 45009}, classErrcode},
		{"gateway 503 with an errcode", outcome{at: s, status: 503, errcode: 45009}, classStatus},
		{"gateway 502", outcome{at: s, status: 502}, classStatus},
		{"a 200 that is not the echo", outcome{at: s, status: 200, mismatch: "the POST body reached WeChat changed"}, classMismatch},
		{"reused, inside the window", outcome{at: 10 * s, err: "EOF", reused: true}, classReload},
		{"reused, just before the POST /load", outcome{at: 10*s - 90*time.Millisecond, err: "EOF", reused: true}, classReload},
		{"reused, while the old server drains", outcome{at: 12 * s, err: "EOF", reused: true}, classReload},
		{"reused, after the window", outcome{at: 12*s + 100*time.Millisecond, err: "EOF", reused: true}, classTransport},
		{"reused, long before", outcome{at: 5 * s, err: "EOF", reused: true}, classTransport},
		{"new connection inside the window", outcome{at: 10 * s, err: "read: connection reset by peer"}, classReloadNew},
		{"new connection after the window", outcome{at: 13 * s, err: "read: connection reset by peer"}, classTransport},
		{"an error beats its status", outcome{at: s, status: 200, err: "read: connection reset by peer"}, classTransport},
		{"40001 in a glitch", outcome{at: 21 * s, status: 200, errcode: 40001}, classGlitch},
		{"40001 sent just before the glitch's end", outcome{at: 22*s + 150*time.Millisecond, status: 200, errcode: 40001}, classGlitch},
		{"40001 after the glitch", outcome{at: 22*s + 300*time.Millisecond, status: 200, errcode: 40001}, classToken},
		{"a 502 in a glitch is no glitch's", outcome{at: 21 * s, status: 502, errcode: 40001}, classStatus},
		{"another errcode in a glitch", outcome{at: 21 * s, status: 200, errcode: 45009}, classErrcode},
		{"a reload excuses no errcode", outcome{at: 10 * s, status: 200, errcode: 40001, reused: true}, classToken},
	}
	for _, c := range cases {
		if got := classify(c.o, ex); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, classNames[got], classNames[c.want])
		}
	}
	if got := classify(outcome{at: 10 * s, err: "EOF", reused: true}, excuses{}); got != classTransport {
		t.Errorf("no reload: %s, want transport", classNames[got])
	}
}

// A tally's failed count leaves out successes and reload-closed
// connections, and nothing else.
func TestSoakTally(t *testing.T) {
	ex := excuses{reloads: []window{reloadWindow(10*s, 10*s)}, glitches: []window{glitchWindow(40*s, 41*s)}}
	var tl tally
	for _, o := range []outcome{
		{at: s, status: 200, latency: 1 * time.Millisecond},
		{at: s, status: 200, post: true, latency: 2 * time.Millisecond},
		{at: 2 * s, status: 200, errcode: 40001, post: true, latency: 3 * time.Millisecond},
		{at: 10 * s, err: "EOF", reused: true, post: true, latency: 4 * time.Millisecond},
		{at: 10 * s, status: 200, attempts: 2, latency: 5 * time.Millisecond},
		{at: 20 * s, status: 200, attempts: 2, latency: 6 * time.Millisecond},
		{at: 30 * s, status: 502, latency: 100 * time.Millisecond},
		{at: 40 * s, status: 200, errcode: 40001, latency: 7 * time.Millisecond},
		{at: 11 * s, err: "read: connection reset by peer", latency: 8 * time.Millisecond},
	} {
		tl.add(o, ex)
	}
	if tl.requests != 9 || tl.gets != 6 || tl.posts != 3 {
		t.Fatalf("requests %d gets %d posts %d, want 9 6 3", tl.requests, tl.gets, tl.posts)
	}
	if tl.by[classOK] != 4 || tl.by[classReload] != 1 || tl.by[classReloadNew] != 1 || tl.by[classGlitch] != 1 || tl.failed() != 2 {
		t.Fatalf("ok %d reload-closed %d reload-reset %d glitch %d failed %d, want 4 1 1 1 2",
			tl.by[classOK], tl.by[classReload], tl.by[classReloadNew], tl.by[classGlitch], tl.failed())
	}
	if tl.retriedAtReload != 1 || tl.retriedElsewhere != 1 {
		t.Fatalf("retried %d+%d, want 1+1", tl.retriedAtReload, tl.retriedElsewhere)
	}
	if tl.closed["transport: EOF"] != 1 || tl.closed["transport: read: connection reset by peer"] != 1 || len(tl.closed) != 2 {
		t.Fatalf("closed kinds %v", tl.closed)
	}
	if tl.lost["HTTP 502"] != 1 || len(tl.lost) != 1 {
		t.Fatalf("lost kinds %v", tl.lost)
	}
	if p50, max := tl.pct(0.5), tl.pct(1); p50 != 5*time.Millisecond || max != 100*time.Millisecond {
		t.Fatalf("p50 %s max %s, want 5ms 100ms", p50, max)
	}
}

// Failures are told by the last event sent before them.
func TestSoakAttribute(t *testing.T) {
	events := []event{{at: 10 * s, name: "revoked"}, {at: 20 * s, name: "reload"}}
	fails := []outcome{
		{at: 5 * s, target: "A", status: 502},
		{at: 10*s + 100*time.Millisecond, target: "A", status: 200, errcode: 40001},
		{at: 12 * s, target: "B", status: 200, errcode: 40001},
		{at: 11 * s, target: "B", status: 200, errcode: 42001},
		{at: 20 * s, target: "A", err: "EOF"},
	}
	classes := make([]class, len(fails))
	for i, f := range fails {
		classes[i] = classify(f, excuses{})
	}
	got := attribute(fails, classes, events)
	if len(got) != 3 {
		t.Fatalf("%d groups, want 3: %+v", len(got), got)
	}
	if got[0].event != "before the first event" || got[0].n != 1 || got[0].kinds["HTTP 502"] != 1 {
		t.Fatalf("first group %+v", got[0])
	}
	r := got[1]
	if r.event != "revoked" || r.n != 3 || r.first != 100*time.Millisecond || r.last != 2*s ||
		r.kinds["errcode 40001"] != 2 || r.kinds["errcode 42001"] != 1 || r.targets["A"] != 1 || r.targets["B"] != 2 {
		t.Fatalf("revoked group %+v", r)
	}
	if got[2].event != "reload" || got[2].n != 1 || got[2].kinds["transport: EOF"] != 1 || got[2].first != 0 {
		t.Fatalf("reload group %+v", got[2])
	}
	// The revoked group ended 8 s before the reload: repaired. The one
	// before the first event ran into it.
	if got[1].open || got[2].open {
		t.Fatalf("groups marked still failing at the next event: %+v %+v", got[1], got[2])
	}
	fails = append(fails, outcome{at: 9*s + 700*time.Millisecond, target: "B", status: 200, errcode: 40001})
	classes = append(classes, classToken)
	if got := attribute(fails, classes, events); !got[0].open || got[0].n != 2 {
		t.Fatalf("failures up to 0.3 s before the next event: %+v", got[0])
	}
	if c := counts(r.kinds); c != "errcode 40001 ×2, errcode 42001 ×1" {
		t.Fatalf("counts: %q", c)
	}
}

// A transport error is named by its cause: not the URL, which carries
// the plain proxy's token, nor the ports.
func TestSoakShortErr(t *testing.T) {
	op := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET),
		Source: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}}
	err := &url.Error{Op: "Get", URL: "http://127.0.0.1:8080/x?access_token=SECRET_TOKEN", Err: op}
	if got := shortErr(err); got != "read: connection reset by peer" {
		t.Fatalf("shortErr = %q", got)
	}
	if got := shortErr(&url.Error{Op: "Post", URL: "http://h/?access_token=T", Err: io.EOF}); got != "EOF" {
		t.Fatalf("shortErr = %q", got)
	}
	if got := shortErr(errors.New("plain")); got != "plain" {
		t.Fatalf("shortErr = %q", got)
	}
}
