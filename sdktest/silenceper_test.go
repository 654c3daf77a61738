package sdktest

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdk "github.com/silenceper/wechat/v2"
	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/officialaccount"
	"github.com/silenceper/wechat/v2/officialaccount/basic"
	"github.com/silenceper/wechat/v2/officialaccount/config"
	"github.com/silenceper/wechat/v2/officialaccount/material"
	"github.com/silenceper/wechat/v2/officialaccount/message"
	"github.com/silenceper/wechat/v2/util"

	"github.com/caddy-wechat/wechat/fakewechat"
)

// TestSilenceper runs silenceper/wechat twice through the gateway:
//
//   - base URL: util.SetURIModifier, the SDK's own setting, sends its
//     https://api.weixin.qq.com URLs to the gateway over plain HTTP;
//   - no change at all, in a child process: the SDK keeps its URLs; a
//     dialer stands in for the hosts file (api.weixin.qq.com and
//     file.api.weixin.qq.com go to the gateway's TLS port), and Go trusts
//     Caddy's internal root through SSL_CERT_FILE alone.
//
// Each run revokes the gateway's token half way; the SDK must not notice.
func TestSilenceper(t *testing.T) {
	f := startFake(t)
	g := startGateway(t, f)

	t.Run("base URL", func(t *testing.T) {
		base := "http://" + g.HTTP
		util.SetURIModifier(func(uri string) string {
			return strings.Replace(uri, "https://api.weixin.qq.com", base, 1)
		})
		defer util.SetURIModifier(nil)
		oa := newOfficialAccount(true)
		silenceperCalls(t, oa, f.RevokeAll)
	})

	t.Run("no change at all", func(t *testing.T) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSilenceperChild$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(),
			"SDKTEST_CHILD=1",
			"SDKTEST_GATEWAY_TLS="+g.HTTPS,
			"SDKTEST_CONTROL="+f.Control,
			"SSL_CERT_FILE="+g.RootCA, // the whole trust recipe for Go
		)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS: TestSilenceperChild") {
			t.Fatalf("child: %v\n%s", err, out)
		}
	})

	paths := f.checkRequests(t)
	for _, p := range []string{"/cgi-bin/user/info", "/cgi-bin/menu/get", "/cgi-bin/menu/create",
		"/cgi-bin/message/template/send", "/cgi-bin/media/upload", "/cgi-bin/media/get",
		"/cgi-bin/ticket/getticket", "/cgi-bin/getcallbackip", "/cgi-bin/user/get",
		"/cgi-bin/tags/create", "/cgi-bin/qrcode/create", "/cgi-bin/message/custom/send"} {
		if paths[p] < 2 {
			t.Errorf("%s reached WeChat %d times, want one per run at least", p, paths[p])
		}
	}
	g.checkReplay(t, f)
	if f.Fetches("classic")+f.Fetches("stable") > 3 {
		t.Errorf("the gateway fetched %d tokens for two SDK runs and one revocation",
			f.Fetches("classic")+f.Fetches("stable"))
	}
}

// TestSilenceperChild is the "no change at all" half, run by TestSilenceper
// in a process of its own so that SSL_CERT_FILE is read at start-up.
func TestSilenceperChild(t *testing.T) {
	if os.Getenv("SDKTEST_CHILD") != "1" {
		t.Skip("run by TestSilenceper")
	}
	gw := os.Getenv("SDKTEST_GATEWAY_TLS")
	// Stands in for "api.weixin.qq.com  10.0.0.5" in /etc/hosts: only the
	// address changes; names, TLS and URLs are the SDK's own.
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		switch addr {
		case "api.weixin.qq.com:443", "file.api.weixin.qq.com:443":
			return d.DialContext(ctx, network, gw)
		}
		return nil, fmt.Errorf("test: %s is not WeChat, refusing to dial", addr)
	}
	sdk.NewWechat().SetHTTPClient(&http.Client{Transport: tr, Timeout: 20 * time.Second})
	oa := newOfficialAccount(false)
	silenceperCalls(t, oa, func() {
		resp, err := http.Get(os.Getenv("SDKTEST_CONTROL") + "/revoke")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	})

	// file.api.weixin.qq.com is served like the main API, token included.
	tok, err := oa.GetAccessToken()
	if err != nil {
		t.Fatal(err)
	}
	b, err := util.PostMultipartForm([]util.MultipartFormField{{IsFile: true, Fieldname: "media", Filename: "v.mp4", FileReader: strings.NewReader("video bytes")}},
		"https://file.api.weixin.qq.com/cgi-bin/media/upload?access_token="+tok+"&type=video")
	sum := sha256.Sum256([]byte("video bytes"))
	if err != nil || !strings.Contains(string(b), `"media_id":"MEDIA_`+hex.EncodeToString(sum[:])[:16]) {
		t.Fatalf("file.api upload: %v %s", err, b)
	}
}

func newOfficialAccount(stable bool) *officialaccount.OfficialAccount {
	return sdk.NewWechat().GetOfficialAccount(&config.Config{
		AppID:       appID,
		AppSecret:   sdkSecret,
		Cache:       cache.NewMemory(),
		UseStableAK: stable,
	})
}

// silenceperCalls makes each kind of call twice, with revoke in between.
func silenceperCalls(t *testing.T, oa *officialaccount.OfficialAccount, revoke func()) {
	tok, err := oa.GetAccessToken()
	if err != nil || !strings.HasPrefix(tok, "CADDY_WECHAT_PLACEHOLDER_") {
		t.Fatalf("SDK token %q, %v: want the gateway's placeholder", tok, err)
	}
	img := filepath.Join(t.TempDir(), "a.jpg")
	imgBytes := fakewechat.MediaBytes(5000)
	if err := os.WriteFile(img, imgBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		if round == 1 {
			revoke()
		}
		check := func(what string, err error) {
			t.Helper()
			if err != nil {
				t.Errorf("round %d: %s: %v", round, what, err)
			}
		}
		_, err := oa.GetUser().GetUserInfo("o1")
		check("user info", err)
		_, err = oa.GetMenu().GetMenu()
		check("menu get", err)
		check("menu create", oa.GetMenu().SetMenuByJSON(`{"button":[{"type":"click","name":"Hi","key":"K1"}]}`))
		_, err = oa.GetTemplate().Send(&message.TemplateMessage{ToUser: "o1", TemplateID: "T1",
			Data: map[string]*message.TemplateDataItem{"first": {Value: "hello"}}})
		check("template send", err)
		media, err := oa.GetMaterial().MediaUpload(material.MediaTypeImage, img)
		check("media upload", err)
		sum := sha256.Sum256(imgBytes)
		if !strings.Contains(media.MediaID, hex.EncodeToString(sum[:])[:16]) {
			t.Errorf("round %d: upload answer %+v does not match the file", round, media)
		}
		// Download: the SDK hands out the URL (with its placeholder) and
		// its own HTTP helper fetches it.
		u, err := oa.GetMaterial().GetMediaURL(media.MediaID)
		check("media url", err)
		body, err := util.HTTPGet(u)
		check("media download", err)
		if got := sha256.Sum256(body); hex.EncodeToString(got[:]) != fakewechat.MediaSHA256(fakewechat.DefaultMediaSize) {
			t.Errorf("round %d: downloaded %d bytes, not the media", round, len(body))
		}
		cfg, err := oa.GetJs().GetConfig("https://example.com/page?x=1")
		check("js-sdk config", err)
		if err == nil {
			checkJSSignature(t, cfg.Signature, cfg.NonceStr, cfg.Timestamp, "https://example.com/page?x=1")
		}
		_, err = oa.GetBasic().GetCallbackIP()
		check("callback ip", err)
		_, err = oa.GetUser().ListUserOpenIDs()
		check("user list", err)
		_, err = oa.GetUser().CreateTag(fmt.Sprintf("tag%d", round))
		check("tag create", err)
		qr, err := oa.GetBasic().GetQRTicket(basic.NewTmpQrRequest(time.Hour, 42))
		check("qrcode create", err)
		if err == nil && !strings.HasPrefix(basic.ShowQRCode(qr), "https://mp.weixin.qq.com/") {
			t.Errorf("showqrcode URL %q: mp.weixin.qq.com is left alone", basic.ShowQRCode(qr))
		}
		check("custom message", oa.GetCustomerMessageManager().Send(message.NewCustomerTextMessage("o1", "hi")))
	}
}

// checkJSSignature recomputes the JS-SDK signature with the ticket the
// fake issued, asked of the gateway with no token at all, through the
// SDK's own HTTP helper (so it takes the same way as the SDK's calls).
func checkJSSignature(t *testing.T, sig, nonce string, ts int64, pageURL string) {
	t.Helper()
	b, err := util.HTTPGet("https://api.weixin.qq.com/cgi-bin/ticket/getticket?type=jsapi")
	var v struct {
		Ticket string `json:"ticket"`
	}
	if err != nil || json.Unmarshal(b, &v) != nil || v.Ticket == "" {
		t.Fatalf("getticket: %v %s", err, b)
	}
	s := fmt.Sprintf("jsapi_ticket=%s&noncestr=%s&timestamp=%d&url=%s", v.Ticket, nonce, ts, pageURL)
	sum := sha1.Sum([]byte(s))
	if hex.EncodeToString(sum[:]) != sig {
		t.Errorf("JS-SDK signature %s does not match the fake's ticket", sig)
	}
}
