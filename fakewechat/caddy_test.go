package fakewechat

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestCaddyfileUnmarshal(t *testing.T) {
	d := caddyfile.NewTestDispenser(`wechat_fake {
		appid      wxDEMO
		secret     {env.FAKEWECHAT_TEST_SECRET}
		corpid     wwDEMO
		corpsecret app1 CS1
		token_ttl  10m
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.AppID != "wxDEMO" || h.Secret != "{env.FAKEWECHAT_TEST_SECRET}" || h.CorpID != "wwDEMO" ||
		h.CorpSecrets["app1"] != "CS1" || time.Duration(h.TokenTTL) != 10*time.Minute {
		t.Fatalf("parsed %+v", h)
	}
	for _, bad := range []string{
		"wechat_fake extra",
		"wechat_fake {\n appid\n}",
		"wechat_fake {\n nope x\n}",
		"wechat_fake {\n token_ttl soon\n}",
	} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q parsed without error", bad)
		}
	}
}

// TestCaddyfileDirectiveOrder checks a demo Caddyfile adapts with no
// `order` option, i.e. the directive order registration works.
func TestCaddyfileDirectiveOrder(t *testing.T) {
	src := ":8080 {\n\twechat_fake {\n\t\tappid wxDEMO\n\t\tsecret S\n\t}\n\trespond 404\n}\n"
	cfg, warn, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), `"handler":"wechat_fake"`) {
		t.Fatalf("adapted config lacks the handler: %s (warnings %v)", cfg, warn)
	}
}

func TestHandlerProvisionSharesServer(t *testing.T) {
	t.Setenv("FAKEWECHAT_TEST_SECRET", "S3CRET")
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()

	h1 := &Handler{AppID: "wxPOOL", Secret: "{env.FAKEWECHAT_TEST_SECRET}"}
	if err := h1.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.Validate(); err != nil {
		t.Fatal(err)
	}
	if h1.Server().opts.Secret != "S3CRET" {
		t.Fatal("secret placeholder not resolved")
	}

	// Fetch a token through the Caddy handler.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/cgi-bin/token?grant_type=client_credential&appid=wxPOOL&secret=S3CRET", nil)
	if err := h1.ServeHTTP(rec, req, nil); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "CLS_") {
		t.Fatalf("token via handler: %d %s", rec.Code, rec.Body)
	}

	// A reload provisions the new config before cleaning up the old one.
	h2 := &Handler{AppID: "wxPOOL", Secret: "S3CRET"}
	if err := h2.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if h2.Server() != h1.Server() {
		t.Fatal("reload with the same credentials got a new fake")
	}
	if err := h1.Cleanup(); err != nil {
		t.Fatal(err)
	}
	h3 := &Handler{AppID: "wxPOOL", Secret: "S3CRET"}
	if err := h3.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if h3.Server() != h2.Server() {
		t.Fatal("fake lost after the old config's cleanup")
	}
	_ = h2.Cleanup()
	_ = h3.Cleanup()

	other := &Handler{AppID: "wxPOOL", Secret: "different"}
	if err := other.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer other.Cleanup()
	if other.Server() == h2.Server() {
		t.Fatal("different secret shares a fake")
	}
	if err := (&Handler{}).Validate(); err == nil {
		t.Fatal("unprovisioned handler validated")
	}
}
