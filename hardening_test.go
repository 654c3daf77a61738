package wechat

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// Hardening tests (issue 7): where requests can go, what happens to
// client-supplied credentials, upstream and token endpoint faults, and
// hostile client behaviour. All run through a real Caddy against the fake.

// --- helpers ---

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

// rawResult is an answer to a request written raw on a TCP connection.
type rawResult struct {
	Status int
	Header http.Header
	Body   string
	Err    error // no parseable answer, or the body broke off
}

// rawDo writes raw to addr on a fresh connection and reads one response.
func rawDo(addr, raw string) rawResult {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return rawResult{Err: err}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		return rawResult{Err: err}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return rawResult{Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return rawResult{Status: resp.StatusCode, Header: resp.Header, Body: string(b), Err: err}
}

// tryGet is get without failing the test on a transport error: fault tests
// look at exactly what the client received.
func tryGet(url string) (status int, body []byte, err error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// onlyAccount returns the single account in the pool.
func onlyAccount(t *testing.T) *sharedAccount {
	t.Helper()
	var got []*sharedAccount
	accounts.Range(func(_, v any) bool {
		got = append(got, v.(*sharedAccount))
		return true
	})
	if len(got) != 1 {
		t.Fatalf("%d accounts in the pool, want 1", len(got))
	}
	return got[0]
}

// waitOK polls url until it answers 200 with errcode 0 or within passes.
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

// --- 2. client-supplied credential parameters ---
