package integration

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/caddy-wechat/wechat"
)

// TestComponentRidGetReadBack attacks the open platform's transport the
// way issue 10 attacked the account's: a call on behalf of a merchant
// ends with "rid: R", and rid/get of R (sent on behalf of the same
// merchant, so WeChat finds it) returns the call's query, with the
// authorizer's access_token in it. The answer must explain the call
// without giving the token back.
func TestComponentRidGetReadBack(t *testing.T) {
	f, g := startComponent(t, 0, nil)
	cb := g.URL + "/wechat/component/callback"
	const merchant = "wxmerchant0000009"
	if _, err := f.PushTicket(cb); err != nil {
		t.Fatal(err)
	}
	if _, err := f.PushAuthorized(cb, merchant); err != nil {
		t.Fatal(err)
	}
	r := do(t, http.MethodGet, g.URL+"/cgi-bin/user/info?openid=nobody", nil, wechat.AuthorizerHeader, merchant)
	if r.errcode() != 0 {
		t.Fatalf("call on behalf of the merchant: %s", r.Body)
	}
	tok := f.CurrentAuthorizerToken(merchant)
	recs := f.Records("/cgi-bin/user/info")
	if tok == "" || len(recs) == 0 || !strings.Contains(recs[len(recs)-1].RawQuery, tok) {
		t.Fatal("the fake did not record the call with the authorizer's token")
	}
	rid := recs[len(recs)-1].RID
	a := do(t, http.MethodPost, g.URL+"/cgi-bin/openapi/rid/get", []byte(`{"rid":"`+rid+`"}`), wechat.AuthorizerHeader, merchant)
	if bytes.Contains(a.Body, []byte(tok)) || bytes.Contains(a.Body, []byte(testComponentSecret)) {
		t.Fatalf("rid/get through the open platform read a credential back: %s", a.Body)
	}
	req, _ := a.JSON["request"].(map[string]any)
	if a.errcode() != 0 || req == nil || !strings.Contains(req["request_url"].(string), "openid=nobody") {
		t.Errorf("rid/get lost its purpose: %s", a.Body)
	}
}

// A call whose body is too large to replay still reports the rejected
// authorizer token: the token is replaced during that call (one
// api_authorizer_token), not left for the next call to meet.
func TestComponentNotReplayableStillReplacesToken(t *testing.T) {
	f, g := startComponent(t, 0, func(upstream string) string {
		return strings.Replace(componentConfig(upstream), "\t\twechat_component {\n", "\t\twechat_component {\n\t\t\tmax_replay_body 1KiB\n", 1)
	})
	cb := g.URL + "/wechat/component/callback"
	const merchant = "wxmerchant0000010"
	if _, err := f.PushTicket(cb); err != nil {
		t.Fatal(err)
	}
	if _, err := f.PushAuthorized(cb, merchant); err != nil {
		t.Fatal(err)
	}
	if r := do(t, http.MethodGet, g.URL+"/cgi-bin/user/info?openid=o1", nil, wechat.AuthorizerHeader, merchant); r.errcode() != 0 {
		t.Fatalf("first call: %s", r.Body)
	}
	old := f.CurrentAuthorizerToken(merchant)
	f.reject(old)
	big := bytes.Repeat([]byte("x"), 4096)
	if r := do(t, http.MethodPost, g.URL+"/cgi-bin/message/custom/send", big, wechat.AuthorizerHeader, merchant); r.errcode() != 40001 {
		t.Fatalf("an oversized call is not replayed, so WeChat's 40001 should pass: %s", r.Body)
	}
	if n := f.Fetches("api_authorizer_token"); n != 1 {
		t.Fatalf("api_authorizer_token calls after the oversized call = %d; want 1 (the rejected token replaced)", n)
	}
	if r := do(t, http.MethodGet, g.URL+"/cgi-bin/user/info?openid=o1", nil, wechat.AuthorizerHeader, merchant); r.errcode() != 0 || f.Fetches("api_authorizer_token") != 1 {
		t.Fatalf("the next call: %s (%d fetches)", r.Body, f.Fetches("api_authorizer_token"))
	}
}
