package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/fakewechat"
	"github.com/caddy-wechat/wechat/internal/testserver"
	"github.com/caddy-wechat/wechat/internal/wxcrypto"
)

// TestPushURLCheck: the gateway answers the URL check of each kind, and
// refuses a forged one, without the app.
func TestPushURLCheck(t *testing.T) {
	app := newPushApp(t)
	g := startPush(t, app, "")
	ctx := context.Background()
	for _, k := range []struct{ kind, path string }{{"oa", "/oa"}, {"plain", "/plain"}, {"mp", "/mp"}, {"wecom", "/wecom"}} {
		if err := pusher(k.kind).URLCheck(ctx, g.A+k.path); err != nil {
			t.Errorf("%s: %v", k.kind, err)
		}
		forged := pusher(k.kind)
		forged.Account.Token = "notTheToken"
		if err := forged.URLCheck(ctx, g.A+k.path); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("%s: a forged URL check got %v", k.kind, err)
		}
	}
	if app.calls.Load() != 0 {
		t.Errorf("the app saw %d URL checks", app.calls.Load())
	}
	if n := g.metric(t, "caddy_wechat_push_requests_total", `result="url_check"`); n != 4 {
		t.Errorf("url_check metric %v, want 4", n)
	}
	g.noSecrets(t, app)
}

// TestPushTextReply: a text message in safe mode reaches the app as
// plaintext with the account's headers, and the app's passive reply comes
// back encrypted and signed; the fake checks the signature and decrypts.
func TestPushTextReply(t *testing.T) {
	app := newPushApp(t)
	g := startPush(t, app, "")
	p := pusher("oa")
	msg := fakewechat.TextMessage(oaOrig, openID, "hello gateway", 72000001, time.Now())
	tries, reply, err := p.Push(context.Background(), []string{g.A + "/oa"}, msg)
	if err != nil || len(tries) != 1 {
		t.Fatalf("push: %v %+v", err, tries)
	}
	if !bytes.Contains(reply, []byte("<Content><![CDATA[you said: hello gateway]]></Content>")) ||
		!bytes.Contains(reply, []byte("<ToUserName><![CDATA["+openID+"]]></ToUserName>")) {
		t.Fatalf("decrypted reply %q", reply)
	}
	seen := app.requests()
	if len(seen) != 1 || seen[0].Body != string(msg) {
		t.Fatalf("the app saw %+v", seen)
	}
	h := seen[0].Header
	if h.Get("Wechat-Appid") != oaAppID || h.Get("Wechat-Openid") != openID || h.Get("Wechat-Msg-Type") != "text" {
		t.Fatalf("app headers %v", h)
	}
	if q, _ := url.ParseQuery(seen[0].Query); q.Get("signature") != "" || q.Get("msg_signature") != "" || q.Get("timestamp") != "" {
		t.Fatalf("the app saw the signed parameters: %v", q)
	}
	// A client's own Wechat-* headers never reach the app.
	r, _ := p.Request(g.A+"/oa", fakewechat.TextMessage(oaOrig, openID, "x", 72000002, time.Now()))
	r.Header.Set("Wechat-Appid", "wxforged")
	r.Header.Set("Wechat-Openid", "oForged")
	if resp, err := http.DefaultClient.Do(r); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	if h := app.requests()[1].Header; h.Get("Wechat-Appid") != oaAppID || h.Get("Wechat-Openid") != openID || len(h.Values("Wechat-Appid")) != 1 {
		t.Fatalf("client headers passed: %v", h)
	}

	// Plain mode: the reply passes as is.
	pp := pusher("plain")
	_, reply, err = pp.Push(context.Background(), []string{g.A + "/plain"}, fakewechat.TextMessage(oaOrig, openID, "plain text", 72000003, time.Now()))
	if err != nil || !bytes.HasPrefix(reply, []byte("<xml><ToUserName>")) || !bytes.Contains(reply, []byte("you said: plain text")) {
		t.Fatalf("plain: %q %v", reply, err)
	}
	// An app that fails: WeChat gets success, and it is counted.
	tries, reply, err = p.Push(context.Background(), []string{g.A + "/fail"}, fakewechat.TextMessage(oaOrig, openID, "x", 72000004, time.Now()))
	if err != nil || string(reply) != "success" || len(tries) != 1 {
		t.Fatalf("failing app: %q %v", reply, err)
	}
	if n := g.metric(t, "caddy_wechat_push_requests_total", `result="app_error"`, oaAppID); n != 1 {
		t.Fatalf("app_error metric %v", n)
	}
	g.noSecrets(t, app)
}

// TestPushMiniProgramJSON: a mini program configured for JSON.
func TestPushMiniProgramJSON(t *testing.T) {
	app := newPushApp(t)
	g := startPush(t, app, "")
	p := pusher("mp")
	msg := []byte(fmt.Sprintf(`{"ToUserName":"%s","FromUserName":"%s","CreateTime":%d,"MsgType":"event","Event":"wxa_media_check","trace_id":"t1","result":{"suggest":"pass"}}`, mpOrig, openID, time.Now().Unix()))
	_, reply, err := p.Push(context.Background(), []string{g.A + "/mp"}, msg)
	if err != nil || string(reply) != "success" {
		t.Fatalf("%q %v", reply, err)
	}
	seen := app.requests()
	if len(seen) != 1 || seen[0].Body != string(msg) || seen[0].Header.Get("Content-Type") != "application/json" ||
		seen[0].Header.Get("Wechat-Event") != "wxa_media_check" || seen[0].Header.Get("Wechat-Appid") != mpAppID {
		t.Fatalf("the app saw %+v", seen)
	}
}

// TestPushWeCom: msg_signature only, receiveid = corpid, AgentID checked,
// the corpid and agent in headers; the reply encrypted for the corp.
func TestPushWeCom(t *testing.T) {
	app := newPushApp(t)
	g := startPush(t, app, "")
	p := pusher("wecom")
	msg := []byte(fmt.Sprintf("<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[zhangsan]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[wecom hi]]></Content><MsgId>81000001</MsgId><AgentID>%s</AgentID></xml>", corpID, time.Now().Unix(), agentID))
	_, reply, err := p.Push(context.Background(), []string{g.A + "/wecom"}, msg)
	if err != nil || !bytes.Contains(reply, []byte("you said: wecom hi")) {
		t.Fatalf("%q %v", reply, err)
	}
	h := app.requests()[0].Header
	if h.Get("Wechat-Corpid") != corpID || h.Get("Wechat-Agentid") != agentID || h.Get("Wechat-Openid") != "zhangsan" {
		t.Fatalf("headers %v", h)
	}
	// The same corp, another agent: refused.
	other := bytes.ReplaceAll(bytes.ReplaceAll(msg, []byte(agentID), []byte("1000009")), []byte("81000001"), []byte("81000002"))
	p.Account.AgentID = "1000009"
	tries, _, _ := p.Push(context.Background(), []string{g.A + "/wecom"}, other)
	if tries[0].Status != 403 || app.calls.Load() != 1 {
		t.Fatalf("another agent: %+v, app %d", tries[0], app.calls.Load())
	}
}

// TestPushRetryAcrossInstances is the measured retry pattern: the app
// takes 6 s, WeChat's tries (5 s timeout each) go to alternating
// instances that share nothing but a Redis store; the message reaches the
// app once, and every try that is answered gets the one reply.
func TestPushRetryAcrossInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 6 s")
	}
	rs := testserver.Redis(t)
	app := newPushApp(t)
	app.delay = 6 * time.Second
	g := startPush(t, app, "store redis {\n\t\t\taddress "+rs.Addr+"\n\t\t}")
	p := pusher("oa")
	msg := fakewechat.TextMessage(oaOrig, openID, "slow app", 73000001, time.Now())
	targets := []string{g.A + "/cluster", g.B + "/cluster"}
	start := time.Now()
	tries, reply, err := p.Push(context.Background(), targets, msg)
	took := time.Since(start)
	if err != nil || len(tries) != 2 {
		t.Fatalf("push: %v, tries %+v", err, tries)
	}
	if tries[0].Err == nil || tries[0].URL != targets[0] {
		t.Fatalf("the first try (to A) should time out after 5 s: %+v", tries[0])
	}
	if tries[1].URL != targets[1] || tries[1].Status != 200 || !bytes.Contains(reply, []byte("you said: slow app")) {
		t.Fatalf("the second try (to B) should get the reply: %+v %q", tries[1], reply)
	}
	// The last of WeChat's tries, to A again, after the reply: the stored
	// reply, and the app is not asked again. Then one more to B.
	var got [][]byte
	for _, u := range []string{targets[0], targets[1]} {
		r, _ := p.Request(u, msg)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		plain, err := p.OpenReply(b)
		if resp.StatusCode != 200 || err != nil {
			t.Fatalf("a later try at %s: %d %v %q", u, resp.StatusCode, err, b)
		}
		got = append(got, plain)
	}
	for i, b := range got {
		if !bytes.Equal(b, reply) {
			t.Fatalf("try %d got another reply:\n%q\n%q", i+3, b, reply)
		}
	}
	if n := app.calls.Load(); n != 1 {
		t.Fatalf("the app saw the message %d times", n)
	}
	waited := g.metric(t, "caddy_wechat_push_requests_total", `result="retry_waited"`)
	stored := g.metric(t, "caddy_wechat_push_requests_total", `result="retry_stored"`)
	// The fallback to in-process marks would hide a store that shares
	// nothing: it must not have been used.
	if se := g.metric(t, "caddy_wechat_push_store_errors_total"); se != 0 {
		t.Fatalf("%v store errors: the instances may have de-duplicated on their own", se)
	}
	if waited != 1 || stored != 2 {
		t.Fatalf("retry_waited %v, retry_stored %v", waited, stored)
	}
	t.Logf("measured: %d deliveries over 2 instances sharing Redis, app (6 s) reached %d time(s); second try answered after %v in all; store errors %v",
		len(tries)+len(got), app.calls.Load(), took.Round(10*time.Millisecond), g.metric(t, "caddy_wechat_push_store_errors_total"))
	g.noSecrets(t, app)
}

// TestPushBadInput: every bad input through a real Caddy gets its 4xx
// and its metric, and reaches no app.
func TestPushBadInput(t *testing.T) {
	app := newPushApp(t)
	g := startPush(t, app, "")
	p := pusher("oa")
	now := time.Now()
	crypt, _ := wxcrypto.New(pushToken, pushAESKey, oaAppID)
	otherApp, _ := wxcrypto.New(pushToken, pushAESKey, "wx0000000someone99")
	// envelope posts enc, correctly signed, at path /oa.
	envelope := func(enc string, body string) *http.Request {
		ts := strconv.FormatInt(now.Unix(), 10)
		q := url.Values{"timestamp": {ts}, "nonce": {"7"}, "signature": {fakewechat.Sign(pushToken, ts, "7")},
			"encrypt_type": {"aes"}, "msg_signature": {fakewechat.Sign(pushToken, ts, "7", enc)}}
		if body == "" {
			body = "<xml><ToUserName>" + oaOrig + "</ToUserName><Encrypt>" + enc + "</Encrypt></xml>"
		}
		r, _ := http.NewRequest(http.MethodPost, g.A+"/oa?"+q.Encode(), strings.NewReader(body))
		return r
	}
	inner := func(plain string) *http.Request { return envelope(crypt.Encrypt([]byte(plain)), "") }
	text := func(id int64) []byte { return fakewechat.TextMessage(oaOrig, openID, "x", id, now) }
	withQuery := func(r *http.Request, k, v string) *http.Request {
		q := r.URL.Query()
		if v == "" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
		r.URL.RawQuery = q.Encode()
		return r
	}
	pushAt := func(at time.Time, msg []byte) *http.Request {
		pa := pusher("oa")
		pa.Now = func() time.Time { return at }
		r, _ := pa.Request(g.A+"/oa", msg)
		return r
	}
	mk := func(msg []byte) *http.Request { r, _ := p.Request(g.A+"/oa", msg); return r }

	// A genuine push, answered, then captured and replayed after the
	// retry span below.
	captured := mk(text(74000000))
	capturedBody, _ := io.ReadAll(captured.Body)
	captured.Body = io.NopCloser(bytes.NewReader(capturedBody))
	if resp, err := http.DefaultClient.Do(captured); err != nil || resp.StatusCode != 200 {
		t.Fatalf("the genuine push: %v %v", resp, err)
	}
	calls := app.calls.Load()

	cases := []struct {
		name   string
		req    *http.Request
		status int
		result string
	}{
		{"missing signature", withQuery(mk(text(74000001)), "signature", ""), 403, "signature"},
		{"wrong signature", withQuery(mk(text(74000002)), "signature", strings.Repeat("a", 40)), 403, "signature"},
		{"wrong msg_signature", withQuery(mk(text(74000003)), "msg_signature", strings.Repeat("b", 40)), 403, "signature"},
		{"stale timestamp", pushAt(now.Add(-10*time.Minute), text(74000004)), 400, "stale_timestamp"},
		{"future timestamp", pushAt(now.Add(10*time.Minute), text(74000005)), 400, "stale_timestamp"},
		{"bad base64", envelope("%%%not-base64%%%", ""), 400, "decrypt"},
		{"bad padding", envelope(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 64)), ""), 400, "decrypt"},
		{"Encrypt for another appid", envelope(otherApp.Encrypt(text(74000006)), ""), 403, "appid"},
		{"non-XML", envelope("QUJD", "this is not xml"), 400, "envelope"},
		{"DOCTYPE", envelope("QUJD", `<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><Encrypt>&x;</Encrypt></xml>`), 400, "envelope"},
		{"entity inside", inner(`<!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><xml><Content>&b;</Content></xml>`), 400, "message"},
		{"deep nesting", inner("<xml>" + strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100) + "</xml>"), 400, "message"},
		{"oversized", envelope("QUJD", "<xml><Encrypt>"+strings.Repeat("Q", 70<<10)+"</Encrypt></xml>"), 413, "too_large"},
		{"plaintext to safe mode", func() *http.Request {
			r := withQuery(withQuery(mk(text(74000007)), "encrypt_type", ""), "msg_signature", "")
			r.Body = io.NopCloser(bytes.NewReader(text(74000007)))
			r.ContentLength = int64(len(text(74000007)))
			return r
		}(), 400, "mode"},
		{"replay outside the retry pattern", nil, 409, "replay"},
	}
	var replayNeeded bool
	for _, c := range cases {
		if c.req == nil {
			replayNeeded = true
			continue
		}
		before := g.metric(t, "caddy_wechat_push_requests_total", `result="`+c.result+`"`)
		resp, err := http.DefaultClient.Do(c.req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		after := g.metric(t, "caddy_wechat_push_requests_total", `result="`+c.result+`"`)
		if resp.StatusCode != c.status || after != before+1 {
			t.Errorf("%s: %d %q, metric %s %v→%v; want %d", c.name, resp.StatusCode, b, c.result, before, after, c.status)
		}
	}
	if replayNeeded {
		// The captured request itself, re-sent inside its timestamp
		// window: the next three sends look like WeChat's retries and get
		// the stored reply; the fifth delivery is outside the pattern.
		// (A replay after the 30 s retry span is refused too: unit tested
		// on a fake clock, TestRetryPattern.)
		for i := 2; i <= 5; i++ {
			r, _ := http.NewRequest(http.MethodPost, captured.URL.String(), bytes.NewReader(capturedBody))
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want := 200
			if i == 5 {
				want = 409
			}
			if resp.StatusCode != want {
				t.Errorf("delivery %d of the captured push: %d, want %d", i, resp.StatusCode, want)
			}
		}
		if n := g.metric(t, "caddy_wechat_push_requests_total", `result="replay"`); n != 1 {
			t.Errorf("replay metric %v", n)
		}
	}
	if n := app.calls.Load(); n != calls {
		t.Errorf("bad input reached the app: %d calls, want %d", n, calls)
	}
	g.noSecrets(t, app)
}

// TestPushConcurrentRetries: ten deliveries of one message at once, over
// both instances sharing memcached: the app once, ten identical replies.
func TestPushConcurrentRetries(t *testing.T) {
	mc := testserver.Memcached(t)
	app := newPushApp(t)
	app.delay = 300 * time.Millisecond
	g := startPush(t, app, "store memcache {\n\t\t\tservers "+mc.Addr+"\n\t\t}")
	p := pusher("oa")
	msg := fakewechat.TextMessage(oaOrig, openID, "burst", 75000001, time.Now())
	var wg sync.WaitGroup
	replies := make([][]byte, 4)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u := []string{g.A, g.B}[i%2] + "/cluster"
			_, replies[i], _ = p.Push(context.Background(), []string{u}, msg)
		}()
	}
	wg.Wait()
	for i, r := range replies {
		if !bytes.Contains(r, []byte("you said: burst")) || !bytes.Equal(r, replies[0]) {
			t.Fatalf("reply %d: %q", i, r)
		}
	}
	if app.calls.Load() != 1 {
		t.Fatalf("app saw %d", app.calls.Load())
	}
}

// TestPushBadFloodMemoryFlat: 100 concurrent oversized pushes (1 MiB,
// no Content-Length), three rounds, through a real Caddy: each is 413,
// none reaches the app, and the heap after them is where it was.
func TestPushBadFloodMemoryFlat(t *testing.T) {
	app := newPushApp(t)
	g := startPush(t, app, "")
	p := pusher("oa")
	big := bytes.Repeat([]byte("A"), 1<<20)
	r0, _ := p.Request(g.A+"/oa", fakewechat.TextMessage(oaOrig, openID, "x", 76000001, time.Now()))
	u := r0.URL.String()
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
	round()
	before := heap()
	round()
	round()
	if after := heap(); after > before+4<<20 {
		t.Errorf("heap %d → %d after 200 oversized pushes", before, after)
	}
	if n := g.metric(t, "caddy_wechat_push_requests_total", `result="too_large"`); n != 300 {
		t.Errorf("too_large %v, want 300", n)
	}
	if app.calls.Load() != 0 {
		t.Errorf("the app saw %d", app.calls.Load())
	}
}
