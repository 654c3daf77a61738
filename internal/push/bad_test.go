package push

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/wxcrypto"
)

// badCase is one hostile request and what it must get.
type badCase struct {
	name   string
	req    func(f *fixture) *http.Request
	status int
	result string
}

// signedEnvelope posts an envelope whose Encrypt is enc, correctly signed.
func signedEnvelope(f *fixture, enc string, ts int64) *http.Request {
	tss := strconv.FormatInt(ts, 10)
	q := url.Values{"timestamp": {tss}, "nonce": {"n"}, "signature": {sig(tToken, tss, "n")}, "encrypt_type": {"aes"},
		"msg_signature": {sig(tToken, tss, "n", enc)}}
	return httptest.NewRequest(http.MethodPost, "/wx?"+q.Encode(), strings.NewReader("<xml><ToUserName>"+tOrig+"</ToUserName><Encrypt>"+enc+"</Encrypt></xml>"))
}

// rawCT builds a ciphertext of p (already padded) under the sample key.
func rawCT(p []byte) string {
	key, _ := base64.StdEncoding.DecodeString(tKey + "=")
	b, _ := aes.NewCipher(key)
	ct := make([]byte, len(p))
	cipher.NewCBCEncrypter(b, key[:16]).CryptBlocks(ct, p)
	return base64.StdEncoding.EncodeToString(ct)
}

// signedPlainBody posts body (as the decrypted message) in a correctly
// signed and encrypted envelope.
func signedBody(f *fixture, body string) *http.Request { return f.request(body, f.now.Unix(), "n") }

func badCases() []badCase {
	deep := "<xml>" + strings.Repeat("<a>", 20) + strings.Repeat("</a>", 20) + "</xml>"
	return []badCase{
		{"no signature", func(f *fixture) *http.Request {
			r := f.request(textXML("1", "x", f.now.Unix()), f.now.Unix(), "n")
			q := r.URL.Query()
			q.Del("signature")
			r.URL.RawQuery = q.Encode()
			return r
		}, 403, ResultSignature},
		{"wrong signature", func(f *fixture) *http.Request {
			r := f.request(textXML("1", "x", f.now.Unix()), f.now.Unix(), "n")
			q := r.URL.Query()
			q.Set("signature", sig("wrong", q.Get("timestamp"), "n"))
			r.URL.RawQuery = q.Encode()
			return r
		}, 403, ResultSignature},
		{"wrong msg_signature", func(f *fixture) *http.Request {
			r := f.request(textXML("1", "x", f.now.Unix()), f.now.Unix(), "n")
			q := r.URL.Query()
			q.Set("msg_signature", strings.Repeat("0", 40))
			r.URL.RawQuery = q.Encode()
			return r
		}, 403, ResultSignature},
		{"no msg_signature", func(f *fixture) *http.Request {
			r := f.request(textXML("1", "x", f.now.Unix()), f.now.Unix(), "n")
			q := r.URL.Query()
			q.Del("msg_signature")
			r.URL.RawQuery = q.Encode()
			return r
		}, 403, ResultSignature},
		{"stale timestamp", func(f *fixture) *http.Request {
			return f.request(textXML("1", "x", f.now.Unix()), f.now.Add(-DefaultMaxSkew-time.Second).Unix(), "n")
		}, 400, ResultStale},
		{"future timestamp", func(f *fixture) *http.Request {
			return f.request(textXML("1", "x", f.now.Unix()), f.now.Add(DefaultMaxSkew+time.Second).Unix(), "n")
		}, 400, ResultStale},
		{"old CreateTime", func(f *fixture) *http.Request {
			return f.request(textXML("1", "x", f.now.Add(-time.Hour).Unix()), f.now.Unix(), "n")
		}, 400, ResultStale},
		{"no timestamp", func(f *fixture) *http.Request {
			return httptest.NewRequest(http.MethodPost, "/wx?nonce=1&signature=x", strings.NewReader("<xml/>"))
		}, 400, ResultParams},
		{"plaintext to a safe-mode account", func(f *fixture) *http.Request {
			ts := strconv.FormatInt(f.now.Unix(), 10)
			return httptest.NewRequest(http.MethodPost, "/wx?"+url.Values{"timestamp": {ts}, "nonce": {"n"}, "signature": {sig(tToken, ts, "n")}}.Encode(),
				strings.NewReader(textXML("1", "x", f.now.Unix())))
		}, 400, ResultMode},
		{"bad base64", func(f *fixture) *http.Request { return signedEnvelope(f, "not*base64!", f.now.Unix()) }, 400, ResultDecrypt},
		{"not whole 32-byte units", func(f *fixture) *http.Request {
			return signedEnvelope(f, base64.StdEncoding.EncodeToString(make([]byte, 48)), f.now.Unix())
		}, 400, ResultDecrypt},
		{"bad padding", func(f *fixture) *http.Request {
			p := bytes.Repeat([]byte{'a'}, 64)
			p[63] = 0
			return signedEnvelope(f, rawCT(p), f.now.Unix())
		}, 400, ResultDecrypt},
		{"length past the end", func(f *fixture) *http.Request {
			p := make([]byte, 64)
			copy(p[16:20], []byte{0, 0, 1, 0})
			for i := 32; i < 64; i++ {
				p[i] = 32
			}
			return signedEnvelope(f, rawCT(p), f.now.Unix())
		}, 400, ResultDecrypt},
		{"Encrypt for another appid", func(f *fixture) *http.Request {
			other, _ := wxcrypto.New(tToken, tKey, "wxsomeoneelse00000")
			return signedEnvelope(f, other.Encrypt([]byte(textXML("1", "x", f.now.Unix()))), f.now.Unix())
		}, 403, ResultAppID},
		{"for another account (ToUserName)", func(f *fixture) *http.Request {
			return signedBody(f, strings.Replace(textXML("1", "x", f.now.Unix()), tOrig, "gh_other", 1))
		}, 403, ResultAppID},
		{"openid differs", func(f *fixture) *http.Request {
			r := f.request(textXML("1", "x", f.now.Unix()), f.now.Unix(), "n")
			q := r.URL.Query()
			q.Set("openid", "oSomeoneElse")
			r.URL.RawQuery = q.Encode()
			return r
		}, 403, ResultMessage},
		{"non-XML body", func(f *fixture) *http.Request {
			r := signedEnvelope(f, "x", f.now.Unix())
			r.Body = io.NopCloser(strings.NewReader("hello, not xml"))
			return r
		}, 400, ResultEnvelope},
		{"DOCTYPE envelope", func(f *fixture) *http.Request {
			r := signedEnvelope(f, "x", f.now.Unix())
			r.Body = io.NopCloser(strings.NewReader(`<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY e "x">]><xml><Encrypt>&e;</Encrypt></xml>`))
			return r
		}, 400, ResultEnvelope},
		{"entity in the decrypted message", func(f *fixture) *http.Request {
			return signedBody(f, `<!DOCTYPE xml [<!ENTITY big "`+strings.Repeat("A", 100)+`">]><xml><ToUserName>`+tOrig+`</ToUserName><Content>&big;</Content></xml>`)
		}, 400, ResultMessage},
		{"undeclared entity", func(f *fixture) *http.Request {
			return signedBody(f, `<xml><ToUserName>`+tOrig+`</ToUserName><Content>&xxe;</Content></xml>`)
		}, 400, ResultMessage},
		{"deep nesting", func(f *fixture) *http.Request { return signedBody(f, deep) }, 400, ResultMessage},
		{"a field twice", func(f *fixture) *http.Request {
			return signedBody(f, strings.Replace(textXML("1", "x", f.now.Unix()), "<MsgType>", "<FromUserName>oOther</FromUserName><MsgType>", 1))
		}, 400, ResultMessage},
		{"oversized body", func(f *fixture) *http.Request {
			r := signedEnvelope(f, "x", f.now.Unix())
			r.Body = io.NopCloser(strings.NewReader("<xml><Encrypt>" + strings.Repeat("A", DefaultMaxBody) + "</Encrypt></xml>"))
			r.ContentLength = -1
			return r
		}, 413, ResultTooLarge},
		{"oversized Content-Length", func(f *fixture) *http.Request {
			r := signedEnvelope(f, "x", f.now.Unix())
			r.ContentLength = DefaultMaxBody + 1
			return r
		}, 413, ResultTooLarge},
		{"no MsgType", func(f *fixture) *http.Request {
			return signedBody(f, "<xml><ToUserName>"+tOrig+"</ToUserName><FromUserName>u</FromUserName><CreateTime>"+strconv.FormatInt(f.now.Unix(), 10)+"</CreateTime></xml>")
		}, 400, ResultMessage},
		{"PUT", func(f *fixture) *http.Request { return httptest.NewRequest(http.MethodPut, "/wx", nil) }, 405, ResultMethod},
	}
}

// TestBadInput: each hostile push gets its 4xx and its metric, reaches
// no app and leaves no mark.
func TestBadInput(t *testing.T) {
	for _, tc := range badCases() {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			w := f.serve(tc.req(f))
			if w.Code != tc.status || f.ev.get(tc.result) != 1 {
				t.Fatalf("got %d %q, events %v; want %d %s", w.Code, w.Body, f.ev.n, tc.status, tc.result)
			}
			if f.app.calls.Load() != 0 || f.g.cfg.Local.Len() != 0 {
				t.Fatalf("app %d, marks %d", f.app.calls.Load(), f.g.cfg.Local.Len())
			}
			if strings.Contains(w.Body.String(), tKey) || strings.Contains(w.Body.String(), tToken) {
				t.Fatal("the answer quotes a secret")
			}
		})
	}
}

// TestBadPushesMemoryFlat: 100 concurrent bad pushes of 1 MiB each, five
// rounds: the heap the gateway keeps afterwards is bounded (no mark, no
// buffer kept), and the peak while they run is bounded by the body limit,
// not by what was sent.
func TestBadPushesMemoryFlat(t *testing.T) {
	f := newFixture(t, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f.g.ServeHTTP(w, r, f.app.serve) }))
	defer srv.Close()
	ts := strconv.FormatInt(f.now.Unix(), 10)
	u := srv.URL + "/wx?" + url.Values{"timestamp": {ts}, "nonce": {"n"}, "signature": {sig(tToken, ts, "n")}, "encrypt_type": {"aes"}, "msg_signature": {"0"}}.Encode()
	big := bytes.Repeat([]byte("A"), 1<<20)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	round := func() {
		var wg sync.WaitGroup
		for range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Unknown length, so the gateway must read to find out.
				resp, err := client.Post(u, "text/xml", io.NopCloser(bytes.NewReader(big)))
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 413 {
						t.Errorf("status %d", resp.StatusCode)
					}
				}
			}()
		}
		wg.Wait()
	}
	round() // warm up pools and connections
	before := heap()
	var peak uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapAlloc)
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	for range 5 {
		round()
	}
	close(stop)
	<-sampled
	after := heap()
	if after > before+2<<20 {
		t.Errorf("heap grew from %d to %d after 500 bad pushes", before, after)
	}
	// Each push holds at most MaxBody+1 bytes of body (and the client its
	// 1 MiB buffer, shared): 100 × 64 KiB plus slack for the HTTP stack.
	if limit := before + 100*uint64(2*DefaultMaxBody) + 16<<20; peak > limit {
		t.Errorf("peak heap %d over %d", peak, limit)
	}
	if f.app.calls.Load() != 0 || f.g.cfg.Local.Len() != 0 || f.ev.get(ResultTooLarge) != 600 {
		t.Fatalf("app %d, marks %d, too_large %d", f.app.calls.Load(), f.g.cfg.Local.Len(), f.ev.get(ResultTooLarge))
	}
}
