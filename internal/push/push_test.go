package push

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/wxcrypto"
)

const (
	tToken = "pushtoken123"
	tKey   = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG" // WeChat's sample key
	tAppID = "wx1234567890abcdef"
	tOrig  = "gh_0123456789ab"
	tUser  = "oUser0123456789"
)

// events counts results.
type events struct {
	mu    sync.Mutex
	n     map[string]int
	store int
}

func (e *events) Push(r string) { e.mu.Lock(); e.n[r]++; e.mu.Unlock() }
func (e *events) StoreError()   { e.mu.Lock(); e.store++; e.mu.Unlock() }
func (e *events) get(r string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[r]
}

// app is a next handler that records what it saw.
type app struct {
	calls   atomic.Int32
	mu      sync.Mutex
	last    *http.Request
	body    []byte
	status  int
	reply   func(body []byte) string
	gate    chan struct{} // if set, each call waits on it
	headers http.Header
}

func (a *app) serve(w http.ResponseWriter, r *http.Request) error {
	a.calls.Add(1)
	b, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.last, a.body, a.headers = r, b, r.Header.Clone()
	a.mu.Unlock()
	if a.gate != nil {
		select {
		case <-a.gate:
		case <-r.Context().Done():
			return r.Context().Err()
		}
	}
	if a.status != 0 {
		w.WriteHeader(a.status)
	}
	if a.reply != nil {
		io.WriteString(w, a.reply(b))
	}
	return nil
}

type fixture struct {
	t   testing.TB
	g   *Gateway
	cfg Config
	ev  *events
	app *app
	c   *wxcrypto.Crypter
	now time.Time // the test's clock; set it with setNow
	// clock is now for the gateway, which reads it from other goroutines.
	clock atomic.Int64
}

func (f *fixture) setNow(t time.Time) { f.now = t; f.clock.Store(t.UnixNano()) }

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, ev: &events{n: map[string]int{}}, app: &app{}}
	f.setNow(time.Unix(1_700_000_000, 0))
	f.cfg = Config{Kind: OfficialAccount, Mode: Safe, Token: tToken, AESKey: tKey, AppID: tAppID, OriginalID: tOrig,
		Events: f.ev, Now: func() time.Time { return time.Unix(0, f.clock.Load()) }, AppTimeout: 2 * time.Second}
	if mod != nil {
		mod(&f.cfg)
	}
	g, err := New(f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.g = g
	if f.cfg.Mode != Plain {
		recv := f.cfg.AppID
		f.c, _ = wxcrypto.New(f.cfg.Token, f.cfg.AESKey, recv)
	}
	return f
}

func textXML(msgID, content string, ct int64) string {
	return fmt.Sprintf("<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[%s]]></Content><MsgId>%s</MsgId></xml>",
		tOrig, tUser, ct, content, msgID)
}

func sig(parts ...string) string { return signature(parts...) }

// request builds what WeChat sends for plain message XML (or JSON).
func (f *fixture) request(plain string, ts int64, nonce string) *http.Request {
	q := url.Values{}
	tss := strconv.FormatInt(ts, 10)
	q.Set("timestamp", tss)
	q.Set("nonce", nonce)
	body := plain
	if f.cfg.Kind != WeCom {
		q.Set("signature", sig(f.cfg.Token, tss, nonce))
		q.Set("openid", tUser)
	}
	if f.cfg.Mode != Plain {
		enc := f.c.Encrypt([]byte(plain))
		q.Set("encrypt_type", "aes")
		q.Set("msg_signature", sig(f.cfg.Token, tss, nonce, enc))
		switch {
		case f.cfg.Format == JSON:
			body = `{"ToUserName":"` + tOrig + `","Encrypt":"` + enc + `"}`
		case f.cfg.Kind == WeCom:
			body = "<xml><ToUserName><![CDATA[" + f.cfg.AppID + "]]></ToUserName><AgentID><![CDATA[1000002]]></AgentID><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>"
		default:
			body = "<xml><ToUserName><![CDATA[" + tOrig + "]]></ToUserName><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>"
		}
	}
	r := httptest.NewRequest(http.MethodPost, "/wx?"+q.Encode(), strings.NewReader(body))
	r.Header.Set("Wechat-Appid", "forged")
	r.Header.Set("Wechat-Openid", "forged")
	return r
}

func (f *fixture) serve(r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	f.g.ServeHTTP(w, r, f.app.serve)
	return w
}

// openReply checks the encrypted reply's signature and decrypts it.
func (f *fixture) openReply(body []byte) string {
	f.t.Helper()
	var env struct {
		Encrypt, MsgSignature, TimeStamp, Nonce string
	}
	if f.cfg.Format == JSON {
		var j struct {
			Encrypt, MsgSignature, Nonce string
			TimeStamp                    int64
		}
		if err := json.Unmarshal(body, &j); err != nil {
			f.t.Fatalf("reply %q: %v", body, err)
		}
		env.Encrypt, env.MsgSignature, env.Nonce, env.TimeStamp = j.Encrypt, j.MsgSignature, j.Nonce, strconv.FormatInt(j.TimeStamp, 10)
	} else {
		fl, err := ParseXML(body)
		if err != nil {
			f.t.Fatalf("reply %q: %v", body, err)
		}
		env.Encrypt = fl.Encrypt
		x := string(body)
		get := func(tag string) string {
			i := strings.Index(x, "<"+tag+">")
			j := strings.Index(x, "</"+tag+">")
			if i < 0 || j < 0 {
				f.t.Fatalf("reply %q lacks %s", body, tag)
			}
			return strings.TrimSuffix(strings.TrimPrefix(x[i+len(tag)+2:j], "<![CDATA["), "]]>")
		}
		env.MsgSignature, env.TimeStamp, env.Nonce = get("MsgSignature"), get("TimeStamp"), get("Nonce")
	}
	if env.MsgSignature != sig(f.cfg.Token, env.TimeStamp, env.Nonce, env.Encrypt) {
		f.t.Fatalf("reply signature %s does not verify", env.MsgSignature)
	}
	p, err := f.c.Decrypt(env.Encrypt)
	if err != nil {
		f.t.Fatalf("reply decrypt: %v", err)
	}
	return string(p)
}

func TestURLCheck(t *testing.T) {
	f := newFixture(t, nil)
	ts := strconv.FormatInt(f.now.Unix(), 10)
	get := func(q url.Values) *httptest.ResponseRecorder {
		return f.serve(httptest.NewRequest(http.MethodGet, "/wx?"+q.Encode(), nil))
	}
	w := get(url.Values{"timestamp": {ts}, "nonce": {"n1"}, "echostr": {"1234567890"}, "signature": {sig(tToken, ts, "n1")}})
	if w.Code != 200 || w.Body.String() != "1234567890" {
		t.Fatalf("URL check: %d %q", w.Code, w.Body)
	}
	w = get(url.Values{"timestamp": {ts}, "nonce": {"n1"}, "echostr": {"1234567890"}, "signature": {sig("other", ts, "n1")}})
	if w.Code != 403 || strings.Contains(w.Body.String(), "1234567890") {
		t.Fatalf("forged URL check: %d %q", w.Code, w.Body)
	}
	old := strconv.FormatInt(f.now.Add(-6*time.Minute).Unix(), 10)
	if w = get(url.Values{"timestamp": {old}, "nonce": {"n1"}, "echostr": {"x"}, "signature": {sig(tToken, old, "n1")}}); w.Code != 400 {
		t.Fatalf("stale URL check: %d", w.Code)
	}
	if f.app.calls.Load() != 0 || f.ev.get(ResultURLCheck) != 1 || f.ev.get(ResultSignature) != 1 || f.ev.get(ResultStale) != 1 {
		t.Fatalf("app %d, events %v", f.app.calls.Load(), f.ev.n)
	}

	wc := newFixture(t, func(c *Config) { c.Kind = WeCom; c.AppID = "ww0123456789abcdef"; c.OriginalID = "" })
	echo := wc.c.Encrypt([]byte("echo-4242"))
	w = httptest.NewRecorder()
	wc.g.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/wx?"+url.Values{"timestamp": {ts}, "nonce": {"n2"}, "echostr": {echo},
		"msg_signature": {sig(tToken, ts, "n2", echo)}}.Encode(), nil), wc.app.serve)
	if w.Code != 200 || w.Body.String() != "echo-4242" {
		t.Fatalf("WeCom URL check: %d %q", w.Code, w.Body)
	}
	other, _ := wxcrypto.New(tToken, tKey, "wwsomeoneelse")
	echo = other.Encrypt([]byte("echo"))
	w = httptest.NewRecorder()
	wc.g.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/wx?"+url.Values{"timestamp": {ts}, "nonce": {"n2"}, "echostr": {echo},
		"msg_signature": {sig(tToken, ts, "n2", echo)}}.Encode(), nil), wc.app.serve)
	if w.Code != 403 {
		t.Fatalf("WeCom URL check for another corp: %d %q", w.Code, w.Body)
	}
}

func TestSafeModeRoundTrip(t *testing.T) {
	f := newFixture(t, nil)
	f.app.reply = func(b []byte) string {
		return "<xml><ToUserName><![CDATA[" + tUser + "]]></ToUserName><FromUserName><![CDATA[" + tOrig + "]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[echo]]></Content></xml>"
	}
	msg := textXML("1001", "hello", f.now.Unix())
	w := f.serve(f.request(msg, f.now.Unix(), "nonce1"))
	if w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if got := f.openReply(w.Body.Bytes()); !strings.Contains(got, "<Content><![CDATA[echo]]></Content>") {
		t.Fatalf("reply plaintext %q", got)
	}
	if string(f.app.body) != msg {
		t.Fatalf("the app got %q, want the plaintext %q", f.app.body, msg)
	}
	h := f.app.headers
	if h.Get(HeaderAppID) != tAppID || h.Get(HeaderOpenID) != tUser || h.Get(HeaderMsgType) != "text" || h.Get(HeaderEvent) != "" {
		t.Fatalf("app headers %v", h)
	}
	if q := f.app.last.URL.Query(); q.Get("signature") != "" || q.Get("msg_signature") != "" || q.Get("openid") != tUser {
		t.Fatalf("app query %v", q)
	}
	for k, vs := range h {
		for _, v := range vs {
			if strings.Contains(v, tToken) || strings.Contains(v, tKey) {
				t.Fatalf("header %s carries a secret", k)
			}
		}
	}
	if f.ev.get(ResultOK) != 1 {
		t.Fatalf("events %v", f.ev.n)
	}
}

func TestPlainMode(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Mode = Plain; c.AESKey = "" })
	reply := "<xml><ToUserName>u</ToUserName><FromUserName>a</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>hi</Content></xml>"
	f.app.reply = func([]byte) string { return reply }
	r := f.request(textXML("2001", "a", f.now.Unix()), f.now.Unix(), "n")
	q := r.URL.RawQuery
	if w := f.serve(r); w.Code != 200 || w.Body.String() != reply {
		t.Fatalf("%d %q", w.Code, w.Body)
	}
	// The same signed query with another message: the signature does not
	// cover the body in plain mode, so the gateway binds it to the first.
	r2 := httptest.NewRequest(http.MethodPost, "/wx?"+q, strings.NewReader(textXML("2002", "forged", f.now.Unix())))
	if w := f.serve(r2); w.Code != 409 {
		t.Fatalf("a signed query reused for another message: %d %s", w.Code, w.Body)
	}
	// An encrypted push to a plain account.
	if w := f.serve(httptest.NewRequest(http.MethodPost, "/wx?"+q+"&encrypt_type=aes", strings.NewReader("<xml><Encrypt>x</Encrypt></xml>"))); w.Code != 400 {
		t.Fatalf("encrypted push in plain mode: %d", w.Code)
	}
	if f.app.calls.Load() != 1 {
		t.Fatalf("app called %d times", f.app.calls.Load())
	}
}

func TestMiniProgramJSON(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Kind = MiniProgram; c.Format = JSON })
	f.app.reply = func([]byte) string {
		return `{"ToUserName":"u","FromUserName":"a","CreateTime":1,"MsgType":"transfer_customer_service"}`
	}
	msg := fmt.Sprintf(`{"ToUserName":"%s","FromUserName":"%s","CreateTime":%d,"MsgType":"event","Event":"user_enter_tempsession","SessionFrom":"x"}`, tOrig, tUser, f.now.Unix())
	w := f.serve(f.request(msg, f.now.Unix(), "n"))
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s %v", w.Code, w.Body, w.Header())
	}
	if got := f.openReply(w.Body.Bytes()); !strings.Contains(got, "transfer_customer_service") {
		t.Fatalf("reply %q", got)
	}
	if string(f.app.body) != msg || f.app.headers.Get(HeaderEvent) != "user_enter_tempsession" || f.app.headers.Get("Content-Type") != "application/json" {
		t.Fatalf("app got %q %v", f.app.body, f.app.headers)
	}
}

func TestWeComPush(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Kind = WeCom
		c.AppID = "ww0123456789abcdef"
		c.OriginalID = ""
		c.AgentID = "1000002"
	})
	f.app.reply = func([]byte) string { return "success" }
	msg := fmt.Sprintf("<xml><ToUserName><![CDATA[ww0123456789abcdef]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hi]]></Content><MsgId>9001</MsgId><AgentID>1000002</AgentID></xml>", f.now.Unix())
	w := f.serve(f.request(msg, f.now.Unix(), "n"))
	if w.Code != 200 || w.Body.String() != "success" {
		t.Fatalf("%d %q", w.Code, w.Body)
	}
	h := f.app.headers
	if h.Get(HeaderCorpID) != "ww0123456789abcdef" || h.Get(HeaderAgentID) != "1000002" || h.Get(HeaderOpenID) != "zhangsan" || h.Get(HeaderAppID) != "" {
		t.Fatalf("headers %v", h)
	}
	// Another agent of the same corp.
	msg2 := strings.ReplaceAll(strings.ReplaceAll(msg, "1000002", "1000003"), "9001", "9002")
	r := f.request(msg2, f.now.Unix(), "n2")
	if w := f.serve(r); w.Code != 403 {
		t.Fatalf("another agent: %d %s", w.Code, w.Body)
	}
}

func TestAppFailureAnswersSuccess(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		reply  string
		result string
	}{
		{"500", 500, "boom", ResultAppError},
		{"502", 502, "", ResultAppError},
		{"not a reply", 200, "<html>oops", ResultBadReply},
		{"empty", 200, "", ResultOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.app.status = tc.status
			f.app.reply = func([]byte) string { return tc.reply }
			w := f.serve(f.request(textXML("3001", "x", f.now.Unix()), f.now.Unix(), "n"))
			want := "success"
			if tc.name == "empty" {
				want = ""
			}
			if w.Code != 200 || w.Body.String() != want || f.ev.get(tc.result) != 1 {
				t.Fatalf("%d %q events %v", w.Code, w.Body, f.ev.n)
			}
		})
	}
}

// TestCompatibleMode: a compatible-mode push carries the message twice,
// in clear and in Encrypt; only the signed, encrypted copy counts, so a
// tampered clear copy changes nothing the app sees, and a compatible
// push without encrypt_type is refused.
func TestCompatibleMode(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Mode = Compatible })
	f.app.reply = func([]byte) string { return replyXML }
	msg := textXML("9901", "the real one", f.now.Unix())
	r := f.request(msg, f.now.Unix(), "n")
	body, _ := io.ReadAll(r.Body)
	tampered := strings.Replace(string(body), "<Encrypt>", "<FromUserName>oEvil</FromUserName><Content>evil</Content><MsgId>1</MsgId><Encrypt>", 1)
	r.Body = io.NopCloser(strings.NewReader(tampered))
	r.ContentLength = int64(len(tampered))
	w := f.serve(r)
	if w.Code != 200 || f.openReply(w.Body.Bytes()) != replyXML || string(f.app.body) != msg || f.app.headers.Get(HeaderOpenID) != tUser {
		t.Fatalf("%d %s; app got %q %v", w.Code, w.Body, f.app.body, f.app.headers)
	}
	q := r.URL.Query()
	q.Del("encrypt_type")
	q.Del("msg_signature")
	r2 := httptest.NewRequest(http.MethodPost, "/wx?"+q.Encode(), strings.NewReader(textXML("9902", "x", f.now.Unix())))
	if w := f.serve(r2); w.Code != 400 || f.app.calls.Load() != 1 {
		t.Fatalf("a clear push in compatible mode: %d", w.Code)
	}
}

// TestWeComSuite: a WeCom third-party app's data callback: the receiver
// id is the suite id, the message is for the authorizing corp, and the
// app learns which corp from Wechat-Corpid.
func TestWeComSuite(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Kind = WeCom; c.AppID = "wwsuite00000000001"; c.OriginalID = "" })
	f.app.reply = func([]byte) string { return "success" }
	msg := fmt.Sprintf("<xml><ToUserName><![CDATA[wwcorpA]]></ToUserName><FromUserName><![CDATA[lisi]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[enter_agent]]></Event><AgentID>7</AgentID></xml>", f.now.Unix())
	ts := strconv.FormatInt(f.now.Unix(), 10)
	enc := f.c.Encrypt([]byte(msg))
	q := url.Values{"timestamp": {ts}, "nonce": {"n"}, "msg_signature": {sig(tToken, ts, "n", enc)}}
	body := "<xml><ToUserName><![CDATA[wwcorpA]]></ToUserName><AgentID><![CDATA[7]]></AgentID><Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>"
	w := f.serve(httptest.NewRequest(http.MethodPost, "/wx?"+q.Encode(), strings.NewReader(body)))
	if w.Code != 200 || f.app.headers.Get(HeaderCorpID) != "wwcorpA" || f.app.headers.Get(HeaderAgentID) != "7" || f.app.headers.Get(HeaderEvent) != "enter_agent" {
		t.Fatalf("%d %s %v", w.Code, w.Body, f.app.headers)
	}
	// The clear envelope naming another corp than the signed message.
	body2 := strings.Replace(body, "<ToUserName><![CDATA[wwcorpA]]>", "<ToUserName><![CDATA[wwcorpB]]>", 1)
	if w := f.serve(httptest.NewRequest(http.MethodPost, "/wx?"+q.Encode(), strings.NewReader(body2))); w.Code != 403 {
		t.Fatalf("envelope for another corp: %d", w.Code)
	}
}
