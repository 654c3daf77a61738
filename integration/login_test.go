package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"testing"
)

// Login and OAuth calls take the account's appid (and secret), never a
// token: the gateway injects them and drops whatever the client sent, and
// leaves the user's own OAuth token on other /sns calls alone.

// fakeOpenID is the fake's openid for a login code, computed here
// independently of the fake.
func fakeOpenID(code string) string {
	h := sha256.Sum256([]byte("openid:" + code))
	return "o_" + hex.EncodeToString(h[:12])
}

func TestLoginJSCode2Session(t *testing.T) {
	f, g := setup(t, "")
	// The client's secret, appid and access_token are all dropped: the
	// fake answers 40125/40013 for wrong credentials and 40097 when any
	// access_token reaches /sns.
	r := get(t, g.URL+"/sns/jscode2session?js_code=CODE1&grant_type=authorization_code&secret=CLIENTSECRET&appid=wxEVIL&access_token=CLIENT&Secret=x")
	if r.Status != 200 || r.errcode() != 0 || r.JSON["openid"] != fakeOpenID("CODE1") {
		t.Fatalf("jscode2session: %d %s", r.Status, r.Body)
	}
	if r.JSON["session_key"] == "" {
		t.Errorf("no session_key: %s", r.Body)
	}
	if n := f.Fetches("stable") + f.Fetches("classic"); n != 0 {
		t.Errorf("login fetched %d access_tokens, want 0", n)
	}
}

func TestLoginOAuthCodeAndRefresh(t *testing.T) {
	f, g := setup(t, "")
	r := get(t, g.URL+"/sns/oauth2/access_token?code=C2&grant_type=authorization_code&secret=WRONG")
	if r.errcode() != 0 || r.JSON["openid"] != fakeOpenID("C2") {
		t.Fatalf("oauth2/access_token: %s", r.Body)
	}
	userTok, _ := r.JSON["access_token"].(string)
	refresh, _ := r.JSON["refresh_token"].(string)

	// refresh_token takes the appid only; a client-sent one is replaced.
	r = get(t, g.URL+"/sns/oauth2/refresh_token?grant_type=refresh_token&appid=wxEVIL&refresh_token="+url.QueryEscape(refresh))
	if r.errcode() != 0 || r.JSON["openid"] != fakeOpenID("C2") {
		t.Fatalf("oauth2/refresh_token: %s", r.Body)
	}

	// Other /sns calls carry the user's token, untouched.
	r = get(t, g.URL+"/sns/userinfo?openid="+fakeOpenID("C2")+"&access_token="+url.QueryEscape(userTok))
	if r.errcode() != 0 {
		t.Fatalf("sns/userinfo with the user's token: %s", r.Body)
	}
	if got := f.LastAPIQuery()["access_token"]; len(got) != 1 || got[0] != userTok {
		t.Errorf("userinfo reached WeChat with access_token %v, want the user's own", got)
	}
	if n := f.Fetches("stable"); n != 0 {
		t.Errorf("OAuth calls fetched %d gateway tokens, want 0", n)
	}
}

func TestLoginWrongAppSecretIsWeChatsAnswer(t *testing.T) {
	resetAccounts(t)
	t.Setenv("TEST_WECHAT_APPID", testAppID)
	t.Setenv("TEST_WECHAT_SECRET", "not-the-secret")
	f := newFake(t)
	g := startCaddy(t, basicConfig(f.URL, ""))
	r := get(t, g.URL+"/sns/jscode2session?js_code=C&grant_type=authorization_code")
	if r.errcode() != 40125 {
		t.Errorf("want WeChat's 40125 passed through, got %s", r.Body)
	}
}
