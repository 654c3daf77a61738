package fakewechat

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

var caddyfileDispenser = caddyfile.NewTestDispenser

// ridIn returns the rid at the end of an errmsg.
func ridIn(t *testing.T, r resp) string {
	t.Helper()
	msg := r.str("errmsg")
	i := strings.LastIndex(msg, " rid: ")
	if i < 0 || !strings.HasSuffix(msg, msg[i:]) || len(msg[i+6:]) != 26 {
		t.Fatalf("errmsg %q: want it to end with a rid", msg)
	}
	return msg[i+6:]
}

func (e *env) ridGet(tok, rid string) resp {
	e.t.Helper()
	b, _ := json.Marshal(map[string]string{"rid": rid})
	return e.do("POST", "/cgi-bin/openapi/rid/get?access_token="+url.QueryEscape(tok), string(b))
}

func TestRIDGetGivesBackTheRequest(t *testing.T) {
	e := newEnv(t)
	tok := e.stable(false).str("access_token")
	r := e.do("GET", AlwaysInvalidPath+"?openid=nobody&access_token="+tok, "")
	wantCode(t, "always 40001", r.code(), 40001)
	rid := ridIn(t, r)

	g := e.ridGet(tok, rid)
	req, _ := g.m["request"].(map[string]any)
	if g.code() != 0 || g.str("errmsg") != "ok" || req == nil {
		t.Fatalf("rid/get: %s", g.body)
	}
	if req["request_url"] != "openid=nobody&access_token="+tok || req["request_body"] != "" ||
		!strings.Contains(req["response_body"].(string), rid) || req["client_ip"] != "127.0.0.1" ||
		req["invoke_time"].(float64) != float64(e.clk.Now().Unix()) {
		t.Fatalf("rid/get request: %s", g.body)
	}
	if _, ok := req["cost_in_ms"].(float64); !ok {
		t.Fatalf("no cost_in_ms: %s", g.body)
	}

	// A failed stable_token fetch: its rid gives the secret back.
	e.fw.FailTokens(40164, "")
	fr := e.stable(false)
	e.fw.FailTokens(0, "")
	g = e.ridGet(tok, ridIn(t, fr))
	if body, _ := g.m["request"].(map[string]any)["request_body"].(string); !strings.Contains(body, `"secret":"SECRET"`) {
		t.Fatalf("stable_token rid: %s", g.body)
	}
	// Successes have rids too: the last one is the rid/get above.
	rec, ok := e.fw.RecordOf(e.fw.LastRID())
	if !ok || rec.Path != "/cgi-bin/openapi/rid/get" || rec.Owner != "app" || rec.Status != 200 {
		t.Fatalf("last record %+v", rec)
	}
	if recs := e.fw.Records("/cgi-bin/stable_token"); len(recs) != 2 || !strings.Contains(recs[0].Response, tok) {
		t.Fatalf("stable_token records: %+v", recs)
	}
}

func TestRIDGetErrors(t *testing.T) {
	e := newEnv(t)
	tok := e.classic()
	wantCode(t, "no token", e.do("POST", "/cgi-bin/openapi/rid/get", `{"rid":"x"}`).code(), 41001)
	wantCode(t, "empty rid", e.ridGet(tok, "").code(), 76002)
	wantCode(t, "unknown rid", e.ridGet(tok, "61725984-6126f6f9-040f19c4").code(), 76001)

	sns := e.do("GET", "/sns/jscode2session?appid=wxAPP&secret=x&js_code=c&grant_type=authorization_code", "")
	wantCode(t, "sns rid", e.ridGet(tok, ridIn(t, sns)).code(), 76022)

	w := e.do("GET", "/cgi-bin/gettoken?corpid=wwCORP&corpsecret=CS1", "").str("access_token")
	other := e.do("GET", "/cgi-bin/menu/get?access_token="+w+"&x=1", "")
	wantCode(t, "other account's rid", e.ridGet(tok, other.m["caddy_wechat_fake"].(map[string]any)["rid"].(string)).code(), 76003)
	wantCode(t, "own rid for WeCom", e.ridGet(w, other.m["caddy_wechat_fake"].(map[string]any)["rid"].(string)).code(), 0)

	old := ridIn(t, e.do("GET", "/cgi-bin/menu/get?access_token=nope", ""))
	_ = old
	mine := ridIn(t, e.do("GET", AlwaysInvalidPath+"?access_token="+tok, ""))
	e.clk.Add(7*24*time.Hour + time.Second)
	tok2 := e.classic()
	wantCode(t, "rid older than 7 days", e.ridGet(tok2, mine).code(), 76001)
	wantCode(t, "rid of an unknown token", e.ridGet(tok2, old).code(), 76001)
}

func TestRIDRecordsBounded(t *testing.T) {
	fw := New(Options{AppID: "wxAPP", Secret: "SECRET", RIDRecords: 3})
	hs := httptest.NewServer(fw)
	defer hs.Close()
	var rids []string
	for range 5 {
		res, err := http.Get(hs.URL + "/cgi-bin/menu/get")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		rids = append(rids, fw.LastRID())
	}
	if len(fw.Records("")) != 3 {
		t.Fatalf("%d records kept, want 3", len(fw.Records("")))
	}
	for i, id := range rids {
		if _, ok := fw.RecordOf(id); ok != (i >= 2) {
			t.Fatalf("rid %d kept=%v", i, ok)
		}
	}
}

func TestProbeGlitchAndHeaders(t *testing.T) {
	e := newEnv(t)
	tok := e.stable(false).str("access_token")
	r := e.do("GET", "/cgi-bin/get_api_domain_ip?access_token="+tok, "")
	if ips, _ := r.m["ip_list"].([]any); len(ips) == 0 {
		t.Fatalf("get_api_domain_ip: %s", r.body)
	}
	wantCode(t, "probe without token", e.do("GET", "/cgi-bin/get_api_domain_ip", "").code(), 41001)
	wantCode(t, "probe with bad token", e.do("GET", "/cgi-bin/get_api_domain_ip?access_token=STB_x", "").code(), 40001)
	if e.fw.Fetches("probe") != 3 || e.fw.Fetches("probe_rejected") != 2 || e.fw.APICalls() != 0 || e.fw.Rejected(40001) != 0 {
		t.Fatalf("probe counters: probe=%d rejected=%d api=%d", e.fw.Fetches("probe"), e.fw.Fetches("probe_rejected"), e.fw.APICalls())
	}

	e.fw.Glitch(10 * time.Second)
	wantCode(t, "call in a glitch", e.call(tok), 40001)
	wantCode(t, "probe in a glitch", e.do("GET", "/cgi-bin/get_api_domain_ip?access_token="+tok, "").code(), 40001)
	if s := e.stable(false); s.str("access_token") != tok {
		t.Fatalf("token endpoint in a glitch: %s", s.body)
	}
	e.clk.Add(10 * time.Second)
	wantCode(t, "after the glitch", e.call(tok), 0)
	e.fw.Glitch(time.Hour)
	e.fw.Glitch(0)
	wantCode(t, "glitch ended", e.call(tok), 0)

	wantCode(t, "always 40001 with a good token", e.do("POST", AlwaysInvalidPath+"?access_token="+tok, "{}").code(), 40001)
	if e.fw.Fetches("always_40001") != 1 {
		t.Fatal("always_40001 not counted")
	}

	if h := e.fw.Headers(); h != (HeaderReport{}) {
		t.Fatalf("headers before: %+v", h)
	}
	req, _ := http.NewRequest("GET", e.hs.URL+"/cgi-bin/user/info?access_token="+tok, nil)
	req.SetBasicAuth("svc", "pw")
	req.Header.Set("Cookie", "sid=1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if h := e.fw.Headers(); h.Authorization != 1 || h.Cookie != 1 || h.LastPath != "/cgi-bin/user/info" {
		t.Fatalf("headers: %+v", h)
	}
	e.fw.Reset()
	if e.fw.Headers() != (HeaderReport{}) {
		t.Fatal("Reset kept the header report")
	}
}

func TestEchoProof(t *testing.T) {
	e := newEnv(t)
	tok := e.classic()
	r := e.do("GET", "/cgi-bin/user/info?openid=o1&access_token="+tok, "")
	p, _ := r.m["caddy_wechat_fake"].(map[string]any)
	if p["token"] != "valid" || p["token_kind"] != "classic" || p["rid"] != e.fw.LastRID() {
		t.Fatalf("proof: %s", r.body)
	}
	if bytes.Contains(r.body, []byte(tok)) {
		t.Fatal("the echo shows the token")
	}
}

func TestMediaUploadAndGet(t *testing.T) {
	e := newEnv(t)
	tok := e.classic()
	file := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640 KB
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	_ = mw.WriteField("description", "x")
	fw, _ := mw.CreateFormFile("media", "a.jpg")
	_, _ = fw.Write(file)
	_ = mw.Close()
	up := func(q string) resp {
		req, _ := http.NewRequest("POST", e.hs.URL+"/cgi-bin/media/upload?"+q, bytes.NewReader(body.Bytes()))
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.Host = "file.api.weixin.qq.com"
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		out := resp{status: res.StatusCode, body: b}
		_ = json.Unmarshal(b, &out.m)
		return out
	}
	wantCode(t, "upload without token", up("type=image").code(), 41001)
	wantCode(t, "upload bad type", up("type=x&access_token="+tok).code(), 40004)
	r := up("type=image&access_token=" + tok)
	sum := sha256.Sum256(file)
	if r.code() != 0 || r.str("media_id") == "" || r.str("sha256") != hex.EncodeToString(sum[:]) ||
		r.m["caddy_wechat_fake"].(map[string]any)["token"] != "valid" {
		t.Fatalf("upload: %s", r.body)
	}
	g := e.do("GET", "/cgi-bin/media/get?media_id="+r.str("media_id")+"&access_token="+tok, "")
	if !bytes.Equal(g.body, file) {
		t.Fatalf("media/get gave %d bytes back, want the %d uploaded", len(g.body), len(file))
	}
	// A large answer reaches the client before its record is stored.
	var recs []Record
	for range 1000 {
		if recs = e.fw.Records("/cgi-bin/media/get"); len(recs) > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if len(recs) != 1 || len(recs[0].Response) != maxRecordBody {
		t.Fatalf("records of a media answer: %d, want one that keeps the cap", len(recs))
	}
}

func TestHandlerRefusesEmptySecret(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	t.Setenv("FAKEWECHAT_EMPTY", "")
	for _, h := range []*Handler{
		{AppID: "wxE"},
		{AppID: "wxE", Secret: "{env.FAKEWECHAT_EMPTY}"},
		{CorpID: "wwE", CorpSecrets: map[string]string{"a": "{env.FAKEWECHAT_EMPTY}"}},
	} {
		err := h.Provision(ctx)
		if err == nil || !strings.Contains(err.Error(), "empty") && !strings.Contains(err.Error(), "no secret") {
			t.Fatalf("%+v: err %v, want a refusal", h, err)
		}
	}
}

func TestHandlerComponent(t *testing.T) {
	d := caddyfileDispenser("wechat_fake {\n component wxC CSECRET cbtok " + compKey + " 3\n}")
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.Component == nil || h.Component.RotateEvery != 3 || h.Component.EncodingAESKey != compKey {
		t.Fatalf("parsed %+v", h.Component)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	if err := h.Validate(); err != nil || h.Server().open == nil || h.Server().open.o.RotateEvery != 3 {
		t.Fatalf("component not provisioned: %v", err)
	}
	for _, bad := range []string{"wechat_fake {\n component wxC CS tok\n}", "wechat_fake {\n component wxC CS tok " + compKey + " x\n}"} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfileDispenser(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	short := &Handler{Component: &HandlerComponent{AppID: "wxC", Secret: "S", EncodingAESKey: "short"}}
	if err := short.Provision(ctx); err == nil {
		t.Fatal("a short EncodingAESKey provisioned")
	}
}
