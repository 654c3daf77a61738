package integration

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/caddy-wechat/wechat"
	"github.com/caddyserver/caddy/v2"
)

// TestComponentReplayAcrossInstances: two callbacks of one component
// over one store (Caddy's file storage) are two gateway instances: the
// second callback's fetch_timeout gives it a platform of its own, as a
// second process would have. An unauthorized push captured at the first
// and replayed to the second, after the merchant authorized again, is
// refused with 409 and forgets nothing.
func TestComponentReplayAcrossInstances(t *testing.T) {
	resetAccounts(t)
	t.Setenv("TEST_COMPONENT_APPID", testComponentAppID)
	t.Setenv("TEST_COMPONENT_SECRET", testComponentSecret)
	t.Setenv("TEST_COMPONENT_TOKEN", testComponentToken)
	t.Setenv("TEST_COMPONENT_AES_KEY", testComponentAESKey)
	f := newComponentFake(t, 0)
	store := "store storage {\n\t\t\t\tstorage file_system {\n\t\t\t\t\troot " + t.TempDir() + "\n\t\t\t\t}\n\t\t\t}"
	callback := func(path, extra string) string {
		return `
	handle ` + path + ` {
		wechat_component_callback {
			appid {env.TEST_COMPONENT_APPID}
			secret {env.TEST_COMPONENT_SECRET}
			token {env.TEST_COMPONENT_TOKEN}
			aes_key {env.TEST_COMPONENT_AES_KEY}
			upstream ` + f.URL + `
			` + store + `
			` + extra + `
		}
	}`
	}
	g := startCaddy(t, `{
	admin 127.0.0.1:%[2]d
	log {
		output file %[3]s
	}
}
http://127.0.0.1:%[1]d {`+callback("/a/callback", "")+callback("/b/callback", "fetch_timeout 9s")+`
	handle {
		wechat_component {
			appid {env.TEST_COMPONENT_APPID}
			secret {env.TEST_COMPONENT_SECRET}
			upstream `+f.URL+`
			`+store+`
		}
	}
}
`)
	t.Cleanup(func() { caddy.Stop() })
	if n := len(statusComponents(t, g)); n != 2 {
		t.Fatalf("%d components in /wechat/status, want 2 (one per instance)", n)
	}
	cbA, cbB := g.URL+"/a/callback", g.URL+"/b/callback"
	const merchant = "wxmerchant0000031"

	if _, err := f.PushTicket(cbA); err != nil {
		t.Fatal(err)
	}
	if _, err := f.PushAuthorized(cbA, merchant); err != nil {
		t.Fatal(err)
	}
	// The merchant revokes; the push reaches instance A and is captured.
	f.Unauthorize(merchant)
	q, body, err := f.SealEvent(f.EventXML("unauthorized", "<AuthorizerAppid><![CDATA["+merchant+"]]></AuthorizerAppid>"))
	if err != nil {
		t.Fatal(err)
	}
	if r := do(t, http.MethodPost, cbA+"?"+q.Encode(), body); r.Status != 200 {
		t.Fatalf("unauthorized at A: %d %s", r.Status, r.Body)
	}
	// The merchant authorizes again, through B.
	if _, err := f.PushAuthorized(cbB, merchant); err != nil {
		t.Fatal(err)
	}
	r := do(t, http.MethodPost, cbB+"?"+q.Encode(), body)
	if r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "already received") {
		t.Fatalf("unauthorized replayed to B: %d %s; want 409", r.Status, r.Body)
	}
	// B, which took the new authorization, still holds the merchant.
	held := 0
	for _, c := range statusComponents(t, g) {
		held = max(held, c.Authorizers)
	}
	if held != 1 {
		t.Errorf("after the replay, no instance holds the authorizer (%d)", held)
	}
	if r := do(t, http.MethodGet, g.URL+"/cgi-bin/user/info?openid=o1", nil, wechat.AuthorizerHeader, merchant); r.Status != 200 || r.errcode() != 0 {
		t.Fatalf("a call for the merchant after the replay: %d %s", r.Status, r.Body)
	}
}

// statusComponents reads the components of /wechat/status.
func statusComponents(t *testing.T, g *runningCaddy) []struct {
	Authorizers int `json:"authorizers"`
} {
	t.Helper()
	resp, err := http.Get("http://" + g.Admin + "/wechat/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Components []struct {
			Authorizers int `json:"authorizers"`
		} `json:"components"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st.Components
}
