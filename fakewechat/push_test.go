package fakewechat

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/wxcrypto"
)

const (
	ptToken = "fakePushToken"
	ptKey   = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	ptAppID = "wx0000000fakepush1"
)

// TestPusherTries: a try that gets no answer in Timeout is retried, up to
// Tries, each to the next target; the signed query verifies; a reply
// whose signature is off is an error.
func TestPusherTries(t *testing.T) {
	c, _ := wxcrypto.New(ptToken, ptKey, ptAppID)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		body, _ := io.ReadAll(r.Body)
		env, err := wxcrypto.ParseEnvelope(body)
		if err != nil || q.Get("signature") != Sign(ptToken, q.Get("timestamp"), q.Get("nonce")) ||
			!c.Verify(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), env.Encrypt) || q.Get("encrypt_type") != "aes" {
			http.Error(w, "bad push", 400)
			return
		}
		switch n.Add(1) {
		case 1, 2:
			time.Sleep(300 * time.Millisecond) // past the try's timeout
		}
		ts, nonce := "1700000000", "42"
		enc := c.Encrypt([]byte("<xml><Content>hi</Content></xml>"))
		sig := Sign(ptToken, ts, nonce, enc)
		if r.URL.Path == "/forged" {
			sig = Sign("other", ts, nonce, enc)
		}
		io.WriteString(w, "<xml><Encrypt><![CDATA["+enc+"]]></Encrypt><MsgSignature><![CDATA["+sig+"]]></MsgSignature><TimeStamp>"+ts+"</TimeStamp><Nonce><![CDATA["+nonce+"]]></Nonce></xml>")
	}))
	defer srv.Close()
	p := &Pusher{Account: PushAccount{Token: ptToken, EncodingAESKey: ptKey, AppID: ptAppID, OriginalID: "gh_x"}, Timeout: 100 * time.Millisecond}
	tries, reply, err := p.Push(context.Background(), []string{srv.URL + "/a", srv.URL + "/b"}, TextMessage("gh_x", "oU", "hi", 1, time.Now()))
	if err != nil || len(tries) != 3 || string(reply) != "<xml><Content>hi</Content></xml>" {
		t.Fatalf("%v %q %+v", err, reply, tries)
	}
	if tries[0].Err == nil || tries[1].Err == nil || !strings.HasSuffix(tries[1].URL, "/b") || !strings.HasSuffix(tries[2].URL, "/a") {
		t.Fatalf("tries %+v", tries)
	}
	tries, _, err = p.Push(context.Background(), []string{srv.URL + "/forged"}, TextMessage("gh_x", "oU", "hi", 2, time.Now()))
	if err == nil || tries[0].Err == nil || !strings.Contains(tries[0].Err.Error(), "MsgSignature") {
		t.Fatalf("a forged reply: %v %+v", err, tries)
	}
}
