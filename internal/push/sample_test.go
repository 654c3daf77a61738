package push

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// WeChat's own sample push (the Python WXBizMsgCrypt sample's decrypt
// case): token, appid, timestamp, nonce, msg_signature and Encrypt as
// WeChat published them.
const (
	pyToken = "spamtest"
	pyAppID = "wx2c2769f8efd9abc2"
	pyTS    = "1409735669"
	pyNonce = "1320562132"
	pySig   = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
	pyEnc   = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE="
)

// TestWeChatSamplePush sends WeChat's sample push through the gateway,
// at the sample's own time: the app gets the sample's plaintext message.
func TestWeChatSamplePush(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Token, c.AppID, c.OriginalID = pyToken, pyAppID, "gh_10f6c3c3ac5a"
		c.Now = func() time.Time { return time.Unix(1409735669, 0) }
	})
	q := url.Values{"timestamp": {pyTS}, "nonce": {pyNonce}, "msg_signature": {pySig}, "encrypt_type": {"aes"},
		"signature": {sig(pyToken, pyTS, pyNonce)}}
	body := "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><Encrypt><![CDATA[" + pyEnc + "]]></Encrypt></xml>"
	f.app.reply = func([]byte) string { return "success" }
	w := httptest.NewRecorder()
	f.g.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/wx?"+q.Encode(), strings.NewReader(body)), f.app.serve)
	if w.Code != 200 || w.Body.String() != "success" {
		t.Fatalf("%d %q", w.Code, w.Body)
	}
	got := string(f.app.body)
	for _, s := range []string{"<Content><![CDATA[abcdteT]]></Content>", "<MsgId>6054768590064713728</MsgId>", "oyORnuP8q7ou2gfYjqLzSIWZf0rs"} {
		if !strings.Contains(got, s) {
			t.Fatalf("the app got %q, which lacks %s", got, s)
		}
	}
	if f.app.headers.Get(HeaderOpenID) != "oyORnuP8q7ou2gfYjqLzSIWZf0rs" {
		t.Fatalf("headers %v", f.app.headers)
	}
	// One bit off in the sample's signature: refused.
	q.Set("msg_signature", "5d197aaffba7e9b25a30732f161a50dee96bd5fb")
	w = httptest.NewRecorder()
	f.g.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/wx?"+q.Encode(), strings.NewReader(body)), f.app.serve)
	if w.Code != 403 {
		t.Fatalf("%d", w.Code)
	}
}
