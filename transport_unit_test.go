package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	dto "github.com/prometheus/client_model/go"
)

// unitTransport provisions a Transport against upstream with no Caddy
// server running, and calls it directly: these tests cover the request
// path in milliseconds, so that the mutation run (scripts/mutate.sh) can run
// them once per mutant.
func unitTransport(t testing.TB, upstreams []string, tweak func(*Transport)) *Transport {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	tr := &Transport{Account: Account{AppID: testAppID, Secret: testSecret, TokenAPI: tokenAPIClassic, TokenEndpoints: upstreams}}
	if tweak != nil {
		tweak(tr)
	}
	if err := tr.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Cleanup() })
	return tr
}

// roundTrip sends one request through tr as reverse_proxy would, and
// returns the status, errcode, X-Wechat-Gateway and body.
type unitResult struct {
	status       int
	errcode      int
	runningCaddy string
	body         string
}

func unitDo(t testing.TB, tr *Transport, method, target string, body string) (unitResult, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	// The request ends with unitDo, as Caddy ends one: its body
	// reservation is given back (bufferedBytes is process-wide).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return unitResult{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := unitResult{status: resp.StatusCode, runningCaddy: resp.Header.Get("X-Wechat-Gateway"), body: string(b)}
	var e struct {
		Errcode int `json:"errcode"`
	}
	_ = json.Unmarshal(b, &e)
	r.errcode = e.Errcode
	return r, nil
}

func mustDo(t testing.TB, tr *Transport, method, target, body string) unitResult {
	t.Helper()
	r, err := unitDo(t, tr, method, target, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	return r
}

func retries(tr *Transport, outcome string) float64 {
	var m dto.Metric
	_ = tr.metrics.retries[outcome].Write(&m)
	return m.GetCounter().GetValue()
}

func TestUnitTokenAddedAndReplayOnce(t *testing.T) {
	f := newFake(t)
	tr := unitTransport(t, []string{f.URL}, nil)
	r := mustDo(t, tr, http.MethodPost, f.URL+"/cgi-bin/message/custom/send", `{"touser":"x"}`)
	if r.status != 200 || r.errcode != 0 || r.runningCaddy != "" {
		t.Fatalf("first call: %+v", r)
	}
	tok := tr.acct.tokens.Current()
	if got := f.LastAPIQuery().Get("access_token"); got != tok.Value {
		t.Fatalf("sent token %q, cached %q", got, tok.Value)
	}
	// WeChat rejects the token: the engine probes it, fetches a new one,
	// and the request is replayed once with the same body.
	f.rejectToken(tok.Value)
	ok := retries(tr, "ok")
	r = mustDo(t, tr, http.MethodPost, f.URL+"/cgi-bin/message/custom/send", `{"touser":"x"}`)
	if r.errcode != 0 || f.Fetches("classic") != 2 || retries(tr, "ok")-ok != 1 {
		t.Fatalf("after a rejected token: %+v, %d fetches, %v ok replays", r, f.Fetches("classic"), retries(tr, "ok")-ok)
	}
	if cur := tr.acct.tokens.Current(); cur == nil || cur.Value == tok.Value || f.LastAPIQuery().Get("access_token") != cur.Value {
		t.Fatal("the replay did not use the new token")
	}
}

// A rejected token behind a body too large to replay: the client gets
// WeChat's answer, not replayed, but the evidence still reaches the
// engine, which replaces the token for the next request (README,
// "Bodies"). A stream of large uploads alone must not keep a dead token.
func TestUnitNotReplayableStillReplacesToken(t *testing.T) {
	f := newFake(t)
	tr := unitTransport(t, []string{f.URL}, func(tr *Transport) { tr.MaxReplayBody = 16 })
	mustDo(t, tr, http.MethodGet, f.URL+"/cgi-bin/user/info?openid=o1", "")
	tok := tr.acct.tokens.Current()
	f.rejectToken(tok.Value)
	calls, nr, ok := f.APICalls(), retries(tr, "not_replayable"), retries(tr, "ok")
	big := `{"touser":"` + strings.Repeat("x", 64) + `"}`
	r := mustDo(t, tr, http.MethodPost, f.URL+"/cgi-bin/message/custom/send", big)
	if r.errcode != 40001 || r.runningCaddy != "" {
		t.Fatalf("not replayable: want WeChat's own 40001, got %+v", r)
	}
	if retries(tr, "not_replayable")-nr != 1 || retries(tr, "ok") != ok {
		t.Fatalf("retries: not_replayable +%v, ok +%v", retries(tr, "not_replayable")-nr, retries(tr, "ok")-ok)
	}
	// One API call and one probe, no replay.
	if n := f.APICalls() - calls; n > 2 {
		t.Fatalf("%d calls reached WeChat; want the request and the probe only", n)
	}
	cur := tr.acct.tokens.Current()
	if cur == nil || cur.Value == tok.Value {
		t.Fatal("the rejected token is still cached after a non-replayable request")
	}
	if f.Fetches("classic") != 2 {
		t.Fatalf("%d fetches; want 2", f.Fetches("classic"))
	}
	r = mustDo(t, tr, http.MethodPost, f.URL+"/cgi-bin/message/custom/send", big)
	if r.errcode != 0 {
		t.Fatalf("next request: %+v", r)
	}
}

// The documented mapping of a failed token fetch: 503 while backing off,
// on -1, 45009, 45011 and on a timeout; 502 otherwise. Always WeChat's
// JSON shape with the errcode, and X-Wechat-Gateway: error (plain
// reverse_proxy would answer 502 too).
func TestUnitTokenUnavailableStatus(t *testing.T) {
	for _, c := range []struct {
		code, status int
	}{{40164, 502}, {40013, 502}, {-1, 503}, {45009, 503}, {45011, 503}} {
		t.Run(fmt.Sprint(c.code), func(t *testing.T) {
			f := newFake(t)
			f.FailTokens(c.code, "no")
			tr := unitTransport(t, []string{f.URL}, nil)
			r := mustDo(t, tr, http.MethodGet, f.URL+"/cgi-bin/user/info?openid=o1", "")
			if r.status != c.status || r.errcode != c.code || r.runningCaddy != "error" {
				t.Fatalf("got %d errcode %d gateway %q; want %d errcode %d gateway error: %s", r.status, r.errcode, r.runningCaddy, c.status, c.code, r.body)
			}
			// The next request finds the cache backing off: 503, with
			// the errcode of the failure.
			r = mustDo(t, tr, http.MethodGet, f.URL+"/cgi-bin/user/info?openid=o1", "")
			if r.status != 503 || r.errcode != c.code || r.runningCaddy != "error" || !strings.Contains(r.body, "next attempt in") {
				t.Fatalf("backing off: got %d errcode %d gateway %q: %s", r.status, r.errcode, r.runningCaddy, r.body)
			}
			if f.Fetches("classic") != 1 {
				t.Fatalf("%d fetches while backing off", f.Fetches("classic"))
			}
		})
	}
}

// A token endpoint that never answers: 503 with errcode -1 once the
// fetch deadline passes (asserted on the answer, not on the time).
func TestUnitTokenTimeout503(t *testing.T) {
	f := newFake(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/cgi-bin/token" {
			return false
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return true
	})
	tr := unitTransport(t, []string{f.URL}, func(tr *Transport) { tr.FetchTimeout = caddy.Duration(50 * time.Millisecond) })
	r := mustDo(t, tr, http.MethodGet, f.URL+"/cgi-bin/user/info?openid=o1", "")
	if r.status != 503 || r.errcode != -1 || r.runningCaddy != "error" {
		t.Fatalf("timeout: got %d errcode %d gateway %q: %s", r.status, r.errcode, r.runningCaddy, r.body)
	}
}

// A transport error that quotes the URL (here a proxy function's) loses
// the token before it reaches reverse_proxy and its logs; a token fetch's
// loses the secret before it reaches the client.
func TestUnitTransportErrorRedacted(t *testing.T) {
	f := newFake(t)
	tr := unitTransport(t, []string{f.URL}, nil)
	failAPI := true
	tr.HTTPTransport.Transport.Proxy = func(r *http.Request) (*url.URL, error) {
		if r.URL.Path == "/cgi-bin/token" || !failAPI {
			return nil, nil
		}
		return nil, errors.New("no proxy for " + r.URL.String())
	}
	_, err := unitDo(t, tr, http.MethodGet, f.URL+"/cgi-bin/user/info?openid=o1", "")
	tok := tr.acct.tokens.Current()
	if err == nil || tok == nil {
		t.Fatalf("want a transport error after a fetch: %v", err)
	}
	if strings.Contains(err.Error(), tok.Value) || !strings.Contains(err.Error(), "no proxy for") {
		t.Fatalf("transport error not redacted (or not the proxy's): %v", err)
	}

	// The token fetch itself fails with the URL, secret included.
	f2 := newFake(t)
	tr2 := unitTransport(t, []string{f2.URL}, nil)
	tr2.HTTPTransport.Transport.Proxy = func(r *http.Request) (*url.URL, error) {
		return nil, errors.New("no proxy for " + r.URL.String())
	}
	r := mustDo(t, tr2, http.MethodGet, f2.URL+"/cgi-bin/user/info?openid=o1", "")
	if r.runningCaddy != "error" || strings.Contains(r.body, testSecret) {
		t.Fatalf("fetch error: %+v", r)
	}
}

// A WeChat errcode from the first token endpoint is an answer about the
// account, not about the endpoint: no failover to the next one.
func TestUnitNoFailoverOnErrcode(t *testing.T) {
	f1, f2 := newFake(t), newFake(t)
	f1.FailTokens(40164, "invalid ip")
	tr := unitTransport(t, []string{f1.URL, f2.URL}, nil)
	r := mustDo(t, tr, http.MethodGet, f1.URL+"/cgi-bin/user/info?openid=o1", "")
	if r.errcode != 40164 || r.status != 502 || r.runningCaddy != "error" {
		t.Fatalf("got %+v", r)
	}
	if f2.Fetches("classic") != 0 {
		t.Fatalf("the fetch failed over to the second endpoint on an errcode")
	}
	// A dead first endpoint does fail over.
	f3 := newFake(t)
	f3.srv.Close()
	tr = unitTransport(t, []string{f3.URL, f2.URL}, nil)
	r = mustDo(t, tr, http.MethodGet, f2.URL+"/cgi-bin/user/info?openid=o1", "")
	if r.errcode != 0 || f2.Fetches("classic") != 1 {
		t.Fatalf("no failover from a dead endpoint: %+v", r)
	}
}
