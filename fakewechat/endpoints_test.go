package fakewechat

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestGzip(t *testing.T) {
	e := newEnv(t)
	e.fw.SetGzip(true)
	tok := e.classic() // the default client decompresses transparently
	req, _ := http.NewRequest("GET", e.hs.URL+"/cgi-bin/media/get?size=100000&access_token="+tok, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	res, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", res.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(zr)
	if !bytes.Equal(b, MediaBytes(100000)) {
		t.Fatal("gzip media body differs")
	}
	e.fw.SetGzip(false)
	res2, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res2.Body.Close()
	if res2.Header.Get("Content-Encoding") != "" {
		t.Fatal("gzip after SetGzip(false)")
	}
}

func TestMediaAndBigJSON(t *testing.T) {
	e := newEnv(t)
	tok := e.classic()
	r := e.do("GET", "/cgi-bin/media/get?media_id=m&access_token="+tok, "")
	sum := sha256.Sum256(r.body)
	if r.hdr.Get("Content-Type") != "image/jpeg" || len(r.body) != DefaultMediaSize ||
		hex.EncodeToString(sum[:]) != MediaSHA256(DefaultMediaSize) {
		t.Fatalf("media: %q, %d bytes", r.hdr.Get("Content-Type"), len(r.body))
	}
	wantCode(t, "media without token", e.do("GET", "/cgi-bin/media/get", "").code(), 41001)

	r = e.do("GET", "/test/big-json?access_token="+tok, "")
	if len(r.body) <= 64<<10 || r.m == nil || r.code() != 0 {
		t.Fatalf("big-json: %d bytes, valid=%v, errcode=%d", len(r.body), r.m != nil, r.code())
	}
	if !bytes.Contains(r.body, []byte(`"errcode":40001`)) {
		t.Fatal("big-json lacks its trap")
	}
}

func TestWeCom(t *testing.T) {
	e := newEnv(t)
	get := func(q string) resp { return e.do("GET", "/cgi-bin/gettoken?"+q, "") }
	a := get("corpid=wwCORP&corpsecret=CS1")
	b := get("corpid=wwCORP&corpsecret=CS2")
	e.clk.Add(time.Minute)
	a2 := get("corpid=wwCORP&corpsecret=CS1")
	if !strings.HasPrefix(a.str("access_token"), "WRK_") || a.str("access_token") == b.str("access_token") ||
		a2.str("access_token") != a.str("access_token") || a2.m["expires_in"].(float64) != 7140 {
		t.Fatalf("gettoken: %s / %s / %s", a.body, b.body, a2.body)
	}
	wantCode(t, "bad corpid", get("corpid=x&corpsecret=CS1").code(), 40013)
	wantCode(t, "bad corpsecret", get("corpid=wwCORP&corpsecret=x").code(), 40001)
	e.clk.Add(2 * time.Hour)
	wantCode(t, "expired WeCom", e.call(a.str("access_token")), 42001)
	if e.fw.Fetches("work") != 5 {
		t.Fatalf("Fetches(work) = %d", e.fw.Fetches("work"))
	}
}

func TestTicket(t *testing.T) {
	e := newEnv(t)
	tok := e.classic()
	r1 := e.do("GET", "/cgi-bin/ticket/getticket?type=jsapi&access_token="+tok, "")
	r2 := e.do("GET", "/cgi-bin/ticket/getticket?type=jsapi&access_token="+e.classic(), "")
	if r1.code() != 0 || r1.str("errmsg") != "ok" || r1.str("ticket") == "" || r1.str("ticket") != r2.str("ticket") {
		t.Fatalf("tickets: %s / %s", r1.body, r2.body)
	}
	card := e.do("GET", "/cgi-bin/ticket/getticket?type=wx_card&access_token="+tok, "")
	if card.str("ticket") == "" || card.str("ticket") == r1.str("ticket") {
		t.Fatalf("wx_card ticket: %s", card.body)
	}
	wantCode(t, "ticket without token", e.do("GET", "/cgi-bin/ticket/getticket?type=jsapi", "").code(), 41001)
	if e.fw.Fetches("ticket") != 4 {
		t.Fatalf("Fetches(ticket) = %d", e.fw.Fetches("ticket"))
	}
}

func TestSNS(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/sns/jscode2session?appid=wxAPP&secret=SECRET&js_code=c1&grant_type=authorization_code", "")
	if !strings.HasPrefix(r.str("openid"), "o_") || r.str("session_key") == "" {
		t.Fatalf("jscode2session: %s", r.body)
	}
	wantCode(t, "token on sns", e.do("GET", "/sns/jscode2session?appid=wxAPP&secret=SECRET&js_code=c1&grant_type=authorization_code&access_token=x", "").code(), 40097)
	wantCode(t, "bad secret", e.do("GET", "/sns/jscode2session?appid=wxAPP&secret=x&js_code=c1&grant_type=authorization_code", "").code(), 40125)
	o := e.do("GET", "/sns/oauth2/access_token?appid=wxAPP&secret=SECRET&code=c2&grant_type=authorization_code", "")
	if !strings.HasPrefix(o.str("access_token"), "OAUTH_") || o.str("openid") == "" {
		t.Fatalf("oauth: %s", o.body)
	}
	rt := o.str("refresh_token")
	r = e.do("GET", "/sns/oauth2/refresh_token?appid=wxAPP&grant_type=refresh_token&refresh_token="+rt, "")
	if r.str("openid") != o.str("openid") || r.str("access_token") == "" {
		t.Fatalf("refresh: %s", r.body)
	}
	wantCode(t, "bad refresh", e.do("GET", "/sns/oauth2/refresh_token?appid=wxAPP&grant_type=refresh_token&refresh_token=x", "").code(), 40030)
}
