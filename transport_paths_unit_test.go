package wechat

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-wechat/wechat/internal/gateway"
	dto "github.com/prometheus/client_model/go"
)

// These tests pin RoundTrip's branches (transport.go) one by one against
// the in-process fake, with no Caddy server, so that the mutation run
// (scripts/mutate.sh) checks them: which body goes upstream, which result each
// answer counts as, and the answers the gateway gives itself.

func requests(tr *Transport, result string) float64 {
	var m dto.Metric
	_ = tr.metrics.requests[result].Write(&m)
	return m.GetCounter().GetValue()
}

// counted runs fn and reports which request results it counted, and how
// many times each.
func counted(tr *Transport, fn func()) map[string]float64 {
	before := map[string]float64{}
	for _, r := range requestResults {
		before[r] = requests(tr, r)
	}
	fn()
	got := map[string]float64{}
	for _, r := range requestResults {
		if d := requests(tr, r) - before[r]; d != 0 {
			got[r] = d
		}
	}
	return got
}

func only(got map[string]float64, result string) bool {
	return len(got) == 1 && got[result] == 1
}

// upstreamLog records what reached the fake's API (not its token
// endpoints): the request line's protocol and target, body,
// Content-Length and Transfer-Encoding of each call.
type upstreamLog struct {
	mu    sync.Mutex
	calls []upstreamCall
}

type upstreamCall struct {
	target  string // "HTTP/1.1 /cgi-bin/...?...": Proto and RequestURI
	body    []byte
	length  int64
	chunked bool
}

func (l *upstreamLog) hook(answer func(w http.ResponseWriter, r *http.Request) bool) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/cgi-bin/token" || r.URL.Path == "/cgi-bin/stable_token" {
			return false
		}
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b)) // the fake may answer from it
		l.mu.Lock()
		l.calls = append(l.calls, upstreamCall{target: r.Proto + " " + r.RequestURI, body: b, length: r.ContentLength, chunked: len(r.TransferEncoding) > 0})
		l.mu.Unlock()
		if answer != nil {
			return answer(w, r)
		}
		return false
	}
}

func (l *upstreamLog) last(t *testing.T) upstreamCall {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.calls) == 0 {
		t.Fatal("nothing reached the upstream API")
	}
	return l.calls[len(l.calls)-1]
}

// Whatever the body (none, buffered for replay, too large to replay, of
// unknown length), WeChat gets exactly the client's bytes with the right
// length.
func TestUnitBodyReachesUpstream(t *testing.T) {
	f := newFake(t)
	var log upstreamLog
	f.setHook(log.hook(nil))
	tr := unitTransport(t, []string{f.URL}, func(tr *Transport) { tr.MaxReplayBody = 16 })
	for _, tc := range []struct {
		name    string
		body    string
		length  int64 // -1: unknown
		chunked bool
	}{
		{"none", "", 0, false},
		{"replayable", `{"a":1}`, 7, false},
		{"too large to replay", `{"touser":"` + strings.Repeat("x", 40) + `"}`, 53, false},
		{"unknown length, replayable", `{"a":2}`, -1, false},
		{"unknown length, too large", `{"touser":"` + strings.Repeat("y", 40) + `"}`, -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = io.MultiReader(strings.NewReader(tc.body)) // hides the length from NewRequest
			}
			req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, f.URL+"/cgi-bin/message/custom/send", body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tc.length
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			c := log.last(t)
			if string(c.body) != tc.body {
				t.Fatalf("upstream got body %q, want %q", c.body, tc.body)
			}
			wantLen := int64(len(tc.body))
			if tc.chunked {
				wantLen = -1
			}
			if c.length != wantLen || c.chunked != tc.chunked {
				t.Errorf("upstream got length %d (chunked %v), want %d (chunked %v)", c.length, c.chunked, wantLen, tc.chunked)
			}
		})
	}
}

// Each answer counts once, as what it is: WeChat's success, WeChat's
// error, an upstream 5xx (from 500 on) on the routes that pass through.
func TestUnitRequestResults(t *testing.T) {
	f := newFake(t)
	status, answer := 200, `{"errcode":0,"errmsg":"ok"}`
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/cgi-bin/token" {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, answer)
		return true
	})
	tr := unitTransport(t, []string{f.URL}, nil)
	for _, tc := range []struct {
		path, answer string
		status       int
		result       string
	}{
		{"/cgi-bin/user/info", `{"errcode":0,"errmsg":"ok"}`, 200, "ok"},
		{"/cgi-bin/user/info", `{"errcode":45009,"errmsg":"limit"}`, 200, "wechat_error"},
		{"/cgi-bin/user/info", `{"errcode":-1,"errmsg":"busy"}`, 200, "wechat_error"},
		{"/sns/userinfo", `{"openid":"o"}`, 200, "ok"},
		{"/sns/userinfo", `{"errcode":40003}`, 499, "ok"},
		{"/sns/userinfo", `oops`, 500, "upstream_5xx"},
		{"/sns/jscode2session", `oops`, 503, "upstream_5xx"},
	} {
		status, answer = tc.status, tc.answer
		var r unitResult
		got := counted(tr, func() { r = mustDo(t, tr, http.MethodGet, f.URL+tc.path+"?openid=o1", "") })
		if !only(got, tc.result) {
			t.Errorf("%s answering %d %s: counted %v, want %s once", tc.path, tc.status, tc.answer, got, tc.result)
		}
		if r.status != tc.status || r.body != tc.answer {
			t.Errorf("%s: the client got %d %q, want WeChat's %d %q", tc.path, r.status, r.body, tc.status, tc.answer)
		}
	}
}

// CONNECT never opens a tunnel with WeChat's host: the gateway answers
// 405 itself.
func TestUnitConnectRefused(t *testing.T) {
	f := newFake(t)
	var log upstreamLog
	f.setHook(log.hook(nil))
	tr := unitTransport(t, []string{f.URL}, nil)
	var r unitResult
	got := counted(tr, func() { r = mustDo(t, tr, http.MethodConnect, f.URL+"/cgi-bin/user/info", "") })
	if r.status != http.StatusMethodNotAllowed || r.errcode != 43002 || r.runningCaddy != "error" || !only(got, "blocked") {
		t.Fatalf("CONNECT: %+v, counted %v", r, got)
	}
	if len(log.calls) != 0 {
		t.Fatalf("CONNECT reached the upstream")
	}
}

// A client that goes away while the token is fetched gets the
// cancellation back (reverse_proxy logs a 499), not an answer of the
// gateway's about the token.
func TestUnitClientGoneDuringFetch(t *testing.T) {
	f := newFake(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/cgi-bin/token" {
			return false
		}
		cancel() // the client leaves while the fetch is on
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return true
	})
	tr := unitTransport(t, []string{f.URL}, nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL+"/cgi-bin/user/info?openid=o1", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if resp != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("client gone: resp %v, err %v; want context.Canceled", resp != nil, err)
	}
}

// RoundTrip scrubs every answer it passes on: WeChat echoing the token
// (in the body or a header) never reaches the client, on the token route
// and on the routes that pass through.
func TestUnitRoundTripScrubs(t *testing.T) {
	f := newFake(t)
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/cgi-bin/token" {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo", r.URL.RawQuery)
		io.WriteString(w, `{"errcode":40003,"errmsg":"invalid openid: `+r.URL.RawQuery+`"}`)
		return true
	})
	tr := unitTransport(t, []string{f.URL}, nil)
	for _, path := range []string{"/cgi-bin/user/info?openid=o1", "/sns/jscode2session?js_code=c"} {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, f.URL+path, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		all := string(b) + " " + resp.Header.Get("X-Echo")
		for _, secret := range append(tr.acct.tokens.Recent(), testSecret) {
			if strings.Contains(all, secret) {
				t.Errorf("%s: the answer carries a credential: %s", path, all)
			}
		}
		if !strings.Contains(string(b), gateway.RedactedMark) || !strings.Contains(resp.Header.Get("X-Echo"), gateway.RedactedMark) {
			t.Errorf("%s: nothing was redacted: %s", path, all)
		}
	}
}

// An answer the scrub cannot read whole (a small body that breaks off)
// is an error for reverse_proxy, never a cut answer passed on.
func TestUnitRoundTripScrubError(t *testing.T) {
	f := newFake(t)
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/cgi-bin/token" {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, `{"errcode":0,`) // then the connection ends
		return true
	})
	tr := unitTransport(t, []string{f.URL}, nil)
	var resp *http.Response
	var err error
	got := counted(tr, func() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, f.URL+"/sns/userinfo?openid=o1", nil)
		resp, err = tr.RoundTrip(req)
	})
	if err == nil || resp != nil {
		t.Fatalf("a broken answer: resp %v, err %v; want an error", resp != nil, err)
	}
	if got["error"] != 1 {
		t.Errorf("counted %v, want an error", got)
	}
}
