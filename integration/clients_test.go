package integration

// Client behaviour through a real Caddy: a client that hangs up, a body
// trickled in.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A client that hangs up while others wait on the same token fetch does
// not cancel that fetch.
func TestHangupDuringSharedFetch(t *testing.T) {
	f, g := setup(t, "")
	f.SetTokenDelay(time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	quitter := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/cgi-bin/user/info?who=quitter", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		quitter <- err
	}()
	time.Sleep(100 * time.Millisecond) // the quitter's fetch is in flight
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := get(t, g.URL+"/cgi-bin/user/info?who="+itoa(i)); r.Status != 200 || r.errcode() != 0 {
				bad.Add(1)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-quitter; err == nil {
		t.Error("the quitter got an answer; it should have hung up first")
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Errorf("%d waiting requests failed after another client hung up", bad.Load())
	}
	if n := f.Fetches("stable"); n != 1 {
		t.Errorf("fetches = %d, want 1 (the shared fetch must survive the hang-up)", n)
	}
}

// A body trickled in over seconds does not hold up other requests.
func TestSlowUploadDoesNotBlockOthers(t *testing.T) {
	_, g := setup(t, "")

	const chunks, chunk = 30, 100
	body := []byte(strings.Repeat("z", chunks*chunk))
	pr, pw := io.Pipe()
	var sent atomic.Int32
	go func() {
		for i := range chunks {
			if _, err := pw.Write(body[i*chunk : (i+1)*chunk]); err != nil {
				return
			}
			sent.Add(1)
			time.Sleep(100 * time.Millisecond)
		}
		pw.Close()
	}()
	slow := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, g.URL+"/cgi-bin/media/uploadimg", pr)
		req.ContentLength = int64(len(body))
		resp, err := client.Do(req)
		if err != nil {
			slow <- result{}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		r := result{Status: resp.StatusCode, Body: b}
		_ = json.Unmarshal(b, &r.JSON)
		slow <- r
	}()
	for sent.Load() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	var bad atomic.Int32
	parallel(20, func(i int) {
		if r := get(t, g.URL+"/cgi-bin/user/info?i="+itoa(i)); r.Status != 200 || r.errcode() != 0 {
			bad.Add(1)
		}
	})
	if n := sent.Load(); n >= chunks {
		t.Errorf("the other requests finished only after the slow upload was sent (%d/%d chunks)", n, chunks)
	}
	if bad.Load() != 0 {
		t.Errorf("%d requests failed while a body trickled in", bad.Load())
	}
	r := <-slow
	sum := sha256.Sum256(body)
	if r.Status != 200 || r.JSON["body_sha256"] != hex.EncodeToString(sum[:]) {
		t.Errorf("slow upload: %d %s", r.Status, r.Body)
	}
}
