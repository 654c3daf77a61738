package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// Failover across WeChat's domains: with several upstreams the wechat
// directive uses them in order, moves on after a dial error or a 5xx, and
// avoids a failing domain for fail_duration (passive health checks).

// brokenEdge answers every request, token endpoints included, with
// status, like a broken proxy in front of WeChat, and counts the hits.
func brokenEdge(t *testing.T, status int) (string, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status)
		io.WriteString(w, "<html>bad gateway</html>")
	}))
	t.Cleanup(s.Close)
	return s.URL, &hits
}

func TestFailoverDownAnd500(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	dead := "http://127.0.0.1:" + itoa(freePort(t))
	five, hits := brokenEdge(t, http.StatusInternalServerError)
	g := startCaddy(t, basicConfig(dead+" "+five+" "+f.URL, "dial_timeout 1s"))

	// The token fetch skips the dead domain and the 500, and so does the
	// request.
	if r := get(t, g.URL+"/cgi-bin/user/info?openid=o1"); r.Status != 200 || r.errcode() != 0 {
		t.Fatalf("GET through failover: %d %s", r.Status, r.Body)
	}
	if f.Fetches("stable") != 1 || f.APICalls() != 1 {
		t.Errorf("good upstream saw %d fetches, %d calls; want 1, 1", f.Fetches("stable"), f.APICalls())
	}
	first := hits.Load() // the token fetch and the first request
	if first != 2 {
		t.Errorf("500 upstream hit %d times, want 2", first)
	}
	// Both bad domains are now avoided for fail_duration.
	body := []byte(`{"touser":"o1","msgtype":"text","text":{"content":"hi"}}`)
	for range 5 {
		r := do(t, http.MethodPost, g.URL+"/cgi-bin/message/custom/send", body)
		sum := sha256.Sum256(body)
		if r.errcode() != 0 || r.JSON["body_sha256"] != hex.EncodeToString(sum[:]) {
			t.Fatalf("POST: %d %s", r.Status, r.Body)
		}
	}
	if hits.Load() != first {
		t.Errorf("the failing domain was tried again within fail_duration (%d hits)", hits.Load())
	}
}

// A POST whose first domain is down or answers 502 is sent again, with its
// body, to the next domain: WeChat never saw it. Chunked bodies too, which
// would otherwise go out empty on the retry.
func TestFailoverPostBodySurvivesRetry(t *testing.T) {
	for _, tc := range []struct {
		name    string
		chunked bool
		dead    bool
	}{{"502", false, false}, {"502-chunked", true, false}, {"dial-chunked", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			resetAccounts(t)
			setEnv(t)
			f := newFake(t)
			first, _ := brokenEdge(t, http.StatusBadGateway)
			if tc.dead {
				first = "http://127.0.0.1:" + itoa(freePort(t))
			}
			g := startCaddy(t, basicConfig(first+" "+f.URL, "dial_timeout 1s"))
			body := bytes.Repeat([]byte("z"), 50000)
			var rd io.Reader = bytes.NewReader(body)
			if tc.chunked {
				rd = io.MultiReader(rd) // unknown length: sent chunked
			}
			req, _ := http.NewRequest(http.MethodPost, g.URL+"/cgi-bin/media/uploadimg", rd)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			out, _ := io.ReadAll(resp.Body)
			sum := sha256.Sum256(body)
			if resp.StatusCode != 200 || !bytes.Contains(out, []byte(hex.EncodeToString(sum[:]))) {
				t.Fatalf("POST after a failed first domain: %d %s", resp.StatusCode, out)
			}
		})
	}
}

// A POST that meets a 500 is not replayed elsewhere: WeChat may have acted
// on it (a message sent twice is worse than an error).
func TestFailoverPostNotRetriedOn500(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	five, _ := brokenEdge(t, http.StatusInternalServerError)
	g := startCaddy(t, basicConfig(five+" "+f.URL, ""))
	r := do(t, http.MethodPost, g.URL+"/cgi-bin/message/custom/send", []byte(`{}`))
	if r.Status != http.StatusInternalServerError || f.APICalls() != 0 {
		t.Errorf("POST got %d, good upstream saw %d calls; want the 500, 0 calls", r.Status, f.APICalls())
	}
	// A GET is retried on any 5xx.
	if r := get(t, g.URL+"/cgi-bin/user/info"); r.errcode() != 0 {
		t.Errorf("GET: %d %s", r.Status, r.Body)
	}
}
