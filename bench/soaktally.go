package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// The soak's bookkeeping, apart from its processes so that it can be
// tested: what one request counts as, and which event it followed.

// outcome is one soak request as its client saw it.
type outcome struct {
	at       time.Duration // when it was sent, from the soak's start
	latency  time.Duration
	target   string // "A", "B" or "proxy"
	post     bool
	status   int    // 0: no answer
	errcode  int    // WeChat's errcode in the answer, 0 if none
	err      string // the transport error, "" if there was an answer
	reused   bool   // an attempt went out on a keep-alive connection
	attempts int    // connections Go's transport used; 2+: it retried once silently
	mismatch string // a 200 with errcode 0 that is not the echo asked for
	detail   string // the start of a failed answer's errmsg, for the report
}

// class is what an outcome counts as.
type class int

const (
	classOK        class = iota
	classToken           // 40001, 40014, 42001 or 41001 reached the client
	classErrcode         // another WeChat errcode reached the client
	classStatus          // a non-2xx answer (a gateway 5xx, ...)
	classMismatch        // a 200 that is not the echo the request asked for
	classTransport       // no answer, and no reload explains it
	classReload          // no answer on a reused connection at a reload: Caddy's graceful close
	classReloadNew       // no answer on a new connection at a reload: reset in the old listener's backlog
	classGlitch          // a token errcode while WeChat rejected every token: nothing to serve
	nClasses
)

var classNames = [nClasses]string{"ok", "token errcode", "other errcode", "non-2xx", "wrong answer", "transport", "reload-closed", "reload-reset", "glitch"}

// window is a stretch of the soak, e.g. around one reload.
type window struct{ from, to time.Duration }

func (w window) has(t time.Duration) bool { return t >= w.from && t <= w.to }

// excuses are the stretches in which some outcomes are not the gateway's
// to prevent.
type excuses struct {
	reloads  []window // a reload of this target: Caddy may close a keep-alive connection
	glitches []window // WeChat rejected every token
}

func within(ws []window, t time.Duration) bool {
	return slices.ContainsFunc(ws, func(w window) bool { return w.has(t) })
}

// glitchWindow excuses the token errcodes of requests sent while the fake
// rejected every token, and those sent just before its end, which the
// gateway may have replayed inside it.
func glitchWindow(start, end time.Duration) window {
	return window{start, end + 200*time.Millisecond}
}

// reloadWindow is the stretch in which a reload may close a client's
// keep-alive connection: from just before the POST /load to a moment after
// it returned, while the old server finishes its graceful shutdown.
func reloadWindow(start, end time.Duration) window {
	return window{start - 100*time.Millisecond, end + 2*time.Second}
}

// tokenErrcode is what the gateway exists to keep from its clients.
func tokenErrcode(code int) bool {
	return code == 40001 || code == 40014 || code == 42001 || code == 41001
}

// classify says what o counts as. Only a transport error sent inside a
// reload's window is the reload's, on a reused connection (the graceful
// close of an idle keep-alive connection as the client sends on it) or on
// a new one (Caddy's listeners share the port with SO_REUSEPORT, and the
// old socket's backlog is reset when it closes); the same error at another
// time is a failure. Only a token errcode sent inside a glitch is the
// glitch's.
func classify(o outcome, ex excuses) class {
	switch {
	case o.err != "":
		switch {
		case !within(ex.reloads, o.at):
			return classTransport
		case o.reused:
			return classReload
		}
		return classReloadNew
	case o.status < 200 || o.status > 299:
		return classStatus
	case tokenErrcode(o.errcode):
		if within(ex.glitches, o.at) {
			return classGlitch
		}
		return classToken
	case o.errcode != 0:
		return classErrcode
	case o.mismatch != "":
		return classMismatch
	}
	return classOK
}

// kind names a failed outcome for the report: what the client got.
func kind(o outcome, c class) string {
	switch c {
	case classTransport, classReload, classReloadNew:
		return "transport: " + o.err
	case classStatus:
		if o.errcode != 0 {
			return fmt.Sprintf("HTTP %d errcode %d", o.status, o.errcode)
		}
		return fmt.Sprintf("HTTP %d", o.status)
	case classToken, classErrcode, classGlitch:
		return fmt.Sprintf("errcode %d", o.errcode)
	case classMismatch:
		return "wrong answer: " + o.mismatch
	}
	return classNames[c]
}

// tally counts one target's outcomes.
type tally struct {
	requests, gets, posts int
	by                    [nClasses]int
	// retried: answered, but only after Go's transport silently resent a
	// GET whose reused connection was closed; inside a reload window or
	// not. A POST is never resent, so it shows as reload-closed instead.
	retriedAtReload, retriedElsewhere int
	closed                            map[string]int // the reload-closed by kind
	lost                              map[string]int // transport errors and non-2xx by kind
	lat                               []time.Duration
}

func (t *tally) add(o outcome, ex excuses) class {
	t.requests++
	if o.post {
		t.posts++
	} else {
		t.gets++
	}
	c := classify(o, ex)
	t.by[c]++
	if c == classReload || c == classReloadNew {
		if t.closed == nil {
			t.closed = map[string]int{}
		}
		t.closed[kind(o, c)]++
	}
	if c == classTransport || c == classStatus {
		if t.lost == nil {
			t.lost = map[string]int{}
		}
		t.lost[kind(o, c)]++
	}
	if o.err == "" && o.attempts > 1 {
		if within(ex.reloads, o.at) {
			t.retriedAtReload++
		} else {
			t.retriedElsewhere++
		}
	}
	t.lat = append(t.lat, o.latency)
	return c
}

// failed counts what the gateway could have served: everything but the
// successes, the connections a reload closed or reset and the glitch's
// rejections.
func (t *tally) failed() int {
	return t.requests - t.by[classOK] - t.by[classReload] - t.by[classReloadNew] - t.by[classGlitch]
}

// excused says whether c is not a failure.
func excused(c class) bool {
	return c == classOK || c == classReload || c == classReloadNew || c == classGlitch
}

// pct is the q-th percentile of the latencies (sorts them).
func (t *tally) pct(q float64) time.Duration {
	if len(t.lat) == 0 {
		return 0
	}
	slices.Sort(t.lat)
	return t.lat[min(len(t.lat)-1, int(q*float64(len(t.lat))))]
}

// event is something the soak did to the system under test.
type event struct {
	at, end time.Duration
	name    string
	note    string // what came of it, e.g. the fake's answer
}

// eventFailures are the failures sent after one event and before the next.
type eventFailures struct {
	event       string // its name, or "before the first event"
	at          time.Duration
	n           int
	first, last time.Duration // of the failures, from the event
	kinds       map[string]int
	targets     map[string]int
	// open: still failing when the next event came (last failure less
	// than 0.5 s before it), so the count is cut short, not repaired.
	open bool
	next time.Duration // the next event's time, if any
}

// attribute groups failures by the last event sent before each of them;
// events are in order of at.
func attribute(fails []outcome, classes []class, events []event) []eventFailures {
	var out []eventFailures
	idx := map[int]int{} // event index (-1: none yet) -> out index
	for i, o := range fails {
		e := sort.Search(len(events), func(j int) bool { return events[j].at > o.at }) - 1
		k, ok := idx[e]
		if !ok {
			ef := eventFailures{event: "before the first event", kinds: map[string]int{}, targets: map[string]int{}, next: -1}
			if e >= 0 {
				ef.event, ef.at = events[e].name, events[e].at
			}
			if e+1 < len(events) {
				ef.next = events[e+1].at
			}
			k = len(out)
			idx[e] = k
			out = append(out, ef)
		}
		ef := &out[k]
		since := o.at - ef.at
		if ef.n == 0 || since < ef.first {
			ef.first = since
		}
		ef.last = max(ef.last, since)
		ef.n++
		ef.kinds[kind(o, classes[i])]++
		ef.targets[o.target]++
	}
	for i := range out {
		ef := &out[i]
		ef.open = ef.next >= 0 && ef.next-(ef.at+ef.last) < 500*time.Millisecond
	}
	sort.Slice(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

// counts formats a map as "k ×n, ..." by descending n.
func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
