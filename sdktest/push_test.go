package sdktest

import (
	"bytes"
	"crypto/rand"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/officialaccount"
	"github.com/silenceper/wechat/v2/officialaccount/config"
	"github.com/silenceper/wechat/v2/officialaccount/message"
	"github.com/silenceper/wechat/v2/util"

	"github.com/caddy-wechat/wechat/fakewechat"
	"github.com/caddy-wechat/wechat/internal/wxcrypto"
)

// The push account of these tests (made-up secrets).
const (
	pushAppID  = "wx00000000sdkpush1"
	pushOrig   = "gh_00000sdkpush"
	pushToken  = "sdkPushToken2026"
	pushAESKey = "Zq8mB3vN5xC7kL9pR2tW4yA6dF8hJ0sU1eG3iK5oM7Q"
	pushOpenID = "oSdkPushUser0000000000000001"
)

// TestPushCryptoAgainstSilenceper: for messages of every length around
// the 32-byte padding unit, what silenceper's util.EncryptMsg makes our
// crypto decrypts, what ours makes silenceper's util.DecryptMsg decrypts,
// and both sign alike (util.Signature).
func TestPushCryptoAgainstSilenceper(t *testing.T) {
	ours, err := wxcrypto.New(pushToken, pushAESKey, pushAppID)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n <= 100; n++ {
		msg := make([]byte, n)
		_, _ = rand.Read(msg)
		random := make([]byte, 16)
		_, _ = rand.Read(random)
		theirs, err := util.EncryptMsg(random, msg, pushAppID, pushAESKey)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ours.Decrypt(string(theirs)); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("len %d: ours decrypting silenceper's: %v", n, err)
		}
		_, got, err := util.DecryptMsg(pushAppID, ours.Encrypt(msg), pushAESKey)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("len %d: silenceper decrypting ours: %v", n, err)
		}
		ts, nonce := strconv.Itoa(1700000000+n), strconv.Itoa(n*7919)
		if a, b := util.Signature(pushToken, ts, nonce, string(theirs)), fakewechat.Sign(pushToken, ts, nonce, string(theirs)); a != b || a != ours.Signature(ts, nonce, string(theirs)) {
			t.Fatalf("signatures differ: %s %s", a, b)
		}
	}
	// silenceper refuses what ours refuses: another appid.
	if _, _, err := util.DecryptMsg("wxsomeoneelse", ours.Encrypt([]byte("x")), pushAESKey); err == nil {
		t.Fatal("silenceper accepted another appid")
	}
}

// TestPushSilenceper runs a real Caddy with wechat_push in front of an
// app written with silenceper's officialaccount/server (in plain mode,
// with no token: the gateway checked everything). The push is encrypted
// and signed by silenceper's util, as WeChat would; the gateway's
// encrypted passive reply is parsed as silenceper's ResponseEncryptedXMLMsg,
// its signature checked with util.Signature and decrypted with
// util.DecryptMsg.
func TestPushSilenceper(t *testing.T) {
	oa := officialaccount.NewOfficialAccount(&config.Config{AppID: pushAppID, AppSecret: sdkSecret, Token: "", Cache: cache.NewMemory()})
	var seen []string
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv := oa.GetServer(r, w)
		srv.SkipValidate(true) // the app has no token: the gateway verified the push
		srv.SetMessageHandler(func(m *message.MixMessage) *message.Reply {
			seen = append(seen, fmt.Sprintf("%s|%s|%s|%d", m.MsgType, m.FromUserName, m.Content, m.MsgID))
			return &message.Reply{MsgType: message.MsgTypeText, MsgData: message.NewText("you said: " + m.Content)}
		})
		if err := srv.Serve(); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		_ = srv.Send()
	}))
	defer app.Close()

	t.Setenv("SDKP_APPID", pushAppID)
	t.Setenv("SDKP_TOKEN", pushToken)
	t.Setenv("SDKP_KEY", pushAESKey)
	dir := t.TempDir()
	hp, ap := freePort(t), freePort(t)
	for ap == hp {
		ap = freePort(t)
	}
	cfgText := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	storage file_system %s
	auto_https off
}
http://127.0.0.1:%d {
	handle /wx {
		wechat_push {
			appid {env.SDKP_APPID}
			token {env.SDKP_TOKEN}
			encoding_aes_key {env.SDKP_KEY}
			original_id %s
		}
		reverse_proxy %s
	}
}
`, ap, filepath.Join(dir, "data"), hp, pushOrig, strings.TrimPrefix(app.URL, "http://"))
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfgText), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
	defer caddy.Stop()
	base := fmt.Sprintf("http://127.0.0.1:%d/wx", hp)

	// The push, made by silenceper's util as WeChat makes it.
	now := time.Now()
	plain := fmt.Sprintf("<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[hello silenceper]]></Content><MsgId>770001</MsgId></xml>",
		pushOrig, pushOpenID, now.Unix())
	random := make([]byte, 16)
	_, _ = rand.Read(random)
	enc, err := util.EncryptMsg(random, []byte(plain), pushAppID, pushAESKey)
	if err != nil {
		t.Fatal(err)
	}
	ts, nonce := strconv.FormatInt(now.Unix(), 10), "246813579"
	body, _ := xml.Marshal(message.EncryptedXMLMsg{ToUserName: pushOrig, EncryptedMsg: string(enc)})
	q := url.Values{"timestamp": {ts}, "nonce": {nonce}, "openid": {pushOpenID}, "encrypt_type": {"aes"},
		"signature": {util.Signature(pushToken, ts, nonce)}, "msg_signature": {util.Signature(pushToken, ts, nonce, string(enc))}}
	var resp *http.Response
	for range 100 { // the listener may still be starting
		resp, err = http.Post(base+"?"+q.Encode(), "text/xml", bytes.NewReader(body))
		if err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, rb)
	}
	var out message.ResponseEncryptedXMLMsg
	if err := xml.Unmarshal(rb, &out); err != nil || out.EncryptedMsg == "" || out.Nonce == "" || out.Timestamp == 0 {
		t.Fatalf("reply %q is not silenceper's encrypted reply: %v", rb, err)
	}
	if want := util.Signature(pushToken, strconv.FormatInt(out.Timestamp, 10), out.Nonce, out.EncryptedMsg); out.MsgSignature != want {
		t.Fatalf("reply MsgSignature %s, silenceper computes %s", out.MsgSignature, want)
	}
	_, replyPlain, err := util.DecryptMsg(pushAppID, out.EncryptedMsg, pushAESKey)
	if err != nil {
		t.Fatal(err)
	}
	var text message.Text
	if err := xml.Unmarshal(replyPlain, &text); err != nil || text.Content != "you said: hello silenceper" ||
		string(text.ToUserName) != pushOpenID || string(text.FromUserName) != pushOrig || text.MsgType != message.MsgTypeText {
		t.Fatalf("decrypted reply %q: %v", replyPlain, err)
	}
	if len(seen) != 1 || seen[0] != "text|"+pushOpenID+"|hello silenceper|770001" {
		t.Fatalf("the silenceper app saw %q", seen)
	}

	// The same push again (a WeChat retry): the stored reply, and the app
	// is not asked again.
	resp, err = http.Post(base+"?"+q.Encode(), "text/xml", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	rb, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := xml.Unmarshal(rb, &out); err != nil {
		t.Fatal(err)
	}
	if _, again, err := util.DecryptMsg(pushAppID, out.EncryptedMsg, pushAESKey); err != nil || !bytes.Equal(again, replyPlain) || len(seen) != 1 {
		t.Fatalf("retry: %q %v; app saw %d", again, err, len(seen))
	}

	// The URL check, as silenceper's Validate computes the signature.
	echo := "5837397520786254375"
	resp, err = http.Get(base + "?" + url.Values{"timestamp": {ts}, "nonce": {nonce}, "echostr": {echo}, "signature": {util.Signature(pushToken, ts, nonce)}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	rb, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(rb) != echo {
		t.Fatalf("URL check answered %q", rb)
	}
}
