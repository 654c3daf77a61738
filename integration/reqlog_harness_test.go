package integration

// What reached the fake WeChat, request by request, and a wait for the
// gateway to answer again (the root's hardening helpers).

import (
	"net/http"
	"sync"
	"testing"
	"time"
)

// seenReq is one request as the fake's HTTP server received it.
type seenReq struct {
	Method, Host, URI, Path, RawQuery string
}

// reqLog records every request that reaches the fake, whatever its path
// (LastAPIQuery covers API calls only, not /sns/* or the token endpoints).
type reqLog struct {
	mu   sync.Mutex
	reqs []seenReq
}

func (l *reqLog) record(r *http.Request) {
	l.mu.Lock()
	l.reqs = append(l.reqs, seenReq{r.Method, r.Host, r.RequestURI, r.URL.Path, r.URL.RawQuery})
	l.mu.Unlock()
}

func (l *reqLog) all() []seenReq {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]seenReq(nil), l.reqs...)
}

func (l *reqLog) since(n int) []seenReq { return l.all()[n:] }

// logAll makes the fake record every request, then run next (may be nil).
func logAll(f *fakeWeChat, l *reqLog, next func(w http.ResponseWriter, r *http.Request) bool) {
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		l.record(r)
		return next != nil && next(w, r)
	})
}

// waitOK calls url until it answers 200 with errcode 0, or fails.
func waitOK(t *testing.T, url string, within time.Duration) result {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := get(t, url)
		if r.Status == 200 && r.errcode() == 0 {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not recover within %s: last %d %s", url, within, r.Status, r.Body)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
