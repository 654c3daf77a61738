package wechat

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

const (
	scrubTok  = "95_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcdefghijklmnopQRSTUVWXYZ"
	scrubOld  = "94_oldtokenoldtokenoldtokenoldtokenoldtokenoldtokenoldtoken0123456"
	scrubSecr = "0123456789abcdef0123456789abcdef"
)

// scrubTransport is a Transport with a secret and two tokens to scrub, and
// no account: the provider stands in for the cache's Recent().
func scrubTransport() *Transport {
	t := &Transport{secret: scrubSecr}
	t.recent = func(dst []string) []string { return append(dst, scrubTok, scrubOld) }
	return t
}

func leaks(s string) []string {
	var out []string
	for _, n := range []string{scrubTok, scrubOld, scrubSecr} {
		if strings.Contains(s, n) {
			out = append(out, n[:6]+"...")
		}
	}
	return out
}

// chunky reads in random small pieces, so needles straddle every boundary.
type chunky struct {
	r   io.Reader
	rng *rand.Rand
}

func (c *chunky) Read(p []byte) (int, error) {
	n := 1 + c.rng.IntN(7)
	if n > len(p) {
		n = len(p)
	}
	return c.r.Read(p[:n])
}

func TestScrubReaderAcrossChunks(t *testing.T) {
	ns := scrubTransport().needles("")
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 1))
		var in strings.Builder
		for in.Len() < 64<<10 {
			switch rng.IntN(4) {
			case 0:
				in.WriteString(scrubTok)
			case 1:
				in.WriteString(url.QueryEscape(scrubSecr))
			case 2:
				in.WriteString(scrubOld[:rng.IntN(len(scrubOld))]) // a prefix is no match
			default:
				in.WriteString(strings.Repeat("x", rng.IntN(100)))
			}
		}
		want := ns.replaceString(in.String())
		sr := &scrubReader{ns: ns, src: &chunky{strings.NewReader(in.String()), rng}, c: io.NopCloser(nil)}
		got, err := io.ReadAll(sr)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Fatalf("seed %d: stream scrub differs from a whole-body replace", seed)
		}
		if l := leaks(string(got)); l != nil {
			t.Fatalf("seed %d: leaked %v", seed, l)
		}
	}
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// Every kind of answer the gateway passes on, with a credential in its body
// and in its headers: none reaches the client, and media is untouched.
func TestScrubResponse(t *testing.T) {
	small := []byte(`{"errcode":40003,"errmsg":"invalid openid, access_token=` + scrubTok + ` secret ` + scrubSecr + ` rid: x"}`)
	large := []byte(strings.Repeat("a", 8<<10) + scrubOld + strings.Repeat("b", 100<<10) + url.QueryEscape(scrubSecr))
	media := append([]byte("\xff\xd8\xff"), []byte(scrubTok)...)
	for _, tc := range []struct {
		name, ct, ce string
		status       int
		body         []byte
		wantPlain    bool // the body must come back unchanged
	}{
		{"small json", "application/json", "", 200, small, false},
		{"small text/plain", "text/plain", "", 200, small, false},
		{"small gzip", "application/json", "gzip", 200, gz(small), false},
		{"large json", "application/json", "", 200, large, false},
		{"large gzip", "text/plain", "gzip", 200, gz(large), false},
		{"html error page", "text/html", "", 502, small, false},
		{"no content type", "", "", 200, large, false},
		{"media", "image/jpeg", "", 200, media, true},
		{"small gzip inflating large", "text/plain", "gzip", 200, gz(large), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := scrubTransport()
			h := http.Header{"Content-Type": {tc.ct}, "Location": {"https://x/?access_token=" + scrubTok}, "X-Echo": {scrubSecr, "ok"}}
			if tc.ce != "" {
				h.Set("Content-Encoding", tc.ce)
			}
			resp := &http.Response{StatusCode: tc.status, Header: h, Body: io.NopCloser(bytes.NewReader(tc.body)), ContentLength: int64(len(tc.body))}
			req, _ := http.NewRequest("GET", "http://gw/cgi-bin/user/info", nil)
			if err := tr.scrubResponse(req, resp); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantPlain {
				if !bytes.Equal(got, tc.body) {
					t.Errorf("media body changed")
				}
			} else {
				if resp.Header.Get("Content-Encoding") != "" {
					got = gunzipAll(t, got)
				}
				if l := leaks(string(got)); l != nil {
					t.Errorf("body leaks %v", l)
				}
				if !bytes.Contains(got, []byte(redactedMark)) {
					t.Errorf("body has no marker: %.200s", got)
				}
				if resp.ContentLength >= 0 && resp.ContentLength != int64(len(got)) {
					t.Errorf("ContentLength %d, body %d", resp.ContentLength, len(got))
				}
			}
			for k, vs := range resp.Header {
				if l := leaks(strings.Join(vs, " ")); l != nil {
					t.Errorf("header %s leaks %v", k, l)
				}
			}
			if resp.Header.Values("X-Echo")[1] != "ok" {
				t.Errorf("a clean header value changed: %v", resp.Header.Values("X-Echo"))
			}
		})
	}
}

func gunzipAll(t *testing.T, b []byte) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(zr)
	return out
}

// rid/get gives back the original request; every credential in it goes,
// whatever its value (here ones the gateway never held), and the rest of
// the answer stays useful.
func TestRedactRidAnswer(t *testing.T) {
	const other = "SomeoneElsesTokenNotOursAtAll"
	in := map[string]any{
		"errcode": 0, "errmsg": "ok",
		"request": map[string]any{
			"invoke_time":   1700000000,
			"cost_in_ms":    12,
			"request_url":   "openid=o1&access_token=" + other + "&Component_Access_Token=" + other + "&SECRET=" + other + "&lang=zh_CN",
			"request_body":  `{"grant_type":"client_credential","appid":"wx1","secret":"` + other + `","nested":{"component_appsecret":"` + other + `","authorizer_refresh_token":"` + other + `"},"force_refresh":false}`,
			"response_body": `{"errcode":40003,"errmsg":"invalid openid"}`,
		},
	}
	tokenFetch := `{"request":{"request_url":"","request_body":"{}","response_body":"{\"access_token\":\"` + other + `\",\"expires_in\":7200}"}}`
	if out := redactRidAnswer([]byte(tokenFetch)); bytes.Contains(out, []byte(other)) || !bytes.Contains(out, []byte("expires_in")) {
		t.Errorf("token fetch's response_body: %s", out)
	}
	b, _ := json.Marshal(in)
	out := redactRidAnswer(b)
	if bytes.Contains(out, []byte(other)) {
		t.Fatalf("credential left in %s", out)
	}
	var got struct {
		Request map[string]any `json:"request"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	r := got.Request
	if r["invoke_time"].(float64) != 1700000000 || r["cost_in_ms"].(float64) != 12 || r["response_body"] != in["request"].(map[string]any)["response_body"] {
		t.Errorf("rid/get lost its purpose: %s", out)
	}
	if u := r["request_url"].(string); !strings.HasPrefix(u, "openid=o1&access_token="+redactedMark) || !strings.HasSuffix(u, "&lang=zh_CN") {
		t.Errorf("request_url = %q", u)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(r["request_body"].(string)), &body); err != nil || body["appid"] != "wx1" || body["grant_type"] != "client_credential" || body["secret"] != redactedMark {
		t.Errorf("request_body = %v (%v)", r["request_body"], err)
	}
	// Not JSON at all: left for the needle scrub, never an error.
	if got := redactRidAnswer([]byte("<html>")); string(got) != "<html>" {
		t.Errorf("non-JSON changed: %q", got)
	}
}

// Closing a small body twice must not hand its buffer, now another
// response's, back to the pool: the other response's bytes must survive.
func TestSniffBodyDoubleClose(t *testing.T) {
	mk := func(s string) *http.Response {
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(s)), ContentLength: int64(len(s))}
	}
	for range 100 {
		a := mk(`{"errcode":0,"a":"aaaa"}`)
		sniff(a)
		a.Body.Close()
		b := mk(`{"errcode":0,"b":"bbbb"}`)
		sniff(b) // likely reuses a's buffer
		a.Body.Close()
		a.Body.Close()
		c := mk(`{"errcode":0,"c":"cccc"}`)
		sniff(c) // would get b's buffer if a's Close gave it back
		got, _ := io.ReadAll(b.Body)
		if string(got) != `{"errcode":0,"b":"bbbb"}` {
			t.Fatalf("b's body became %q after a double Close", got)
		}
		b.Body.Close()
		c.Body.Close()
	}
}

func TestUpstreamHeader(t *testing.T) {
	h := http.Header{"Authorization": {"Basic c3ZjOnB3"}, "Proxy-Authorization": {"x"}, "Cookie": {"sid=1"}, "Accept-Encoding": {"br, gzip;q=0.5"}, "X-Keep": {"1"}}
	tr := &Transport{}
	out := upstreamHeader(h, tr.KeepCallerAuth, "", false)
	for _, k := range callerCredentialHeaders {
		if out.Get(k) != "" {
			t.Errorf("%s reached upstream", k)
		}
	}
	if out.Get("X-Keep") != "1" || out.Get("Accept-Encoding") != "gzip" {
		t.Errorf("upstream headers %v", out)
	}
	if h.Get("Authorization") == "" {
		t.Error("the caller's header map was changed")
	}
	if got := upstreamHeader(http.Header{"Accept-Encoding": {"br"}}, tr.KeepCallerAuth, "", false); got.Get("Accept-Encoding") != "" {
		t.Errorf("br-only caller: Accept-Encoding %q, want none", got.Get("Accept-Encoding"))
	}
	plain := http.Header{"X-A": {"1"}}
	if got := upstreamHeader(plain, tr.KeepCallerAuth, "", false); &got == &plain || len(got) != 1 {
		t.Errorf("plain headers changed")
	}
	tr.KeepCallerAuth = true
	if upstreamHeader(h, tr.KeepCallerAuth, "", false).Get("Authorization") == "" {
		t.Error("keep_caller_auth dropped Authorization")
	}
}

func TestClassifyOwnCredential(t *testing.T) {
	for q, want := range map[string]route{
		"component_access_token=x":      routeOwnCred,
		"a=1&SUITE_ACCESS_TOKEN=x":      routeOwnCred,
		"provider%5Faccess%5Ftoken=x":   routeOwnCred,
		"+provider_access_token=x":      routeOwnCred,
		"access_token=x":                routeToken,
		"component_access_tokenx=1":     routeToken,
		"openid=component_access_token": routeToken,
		"":                              routeToken,
	} {
		if got := classifyRequest("/cgi-bin/component/api_query_auth", q); got != want {
			t.Errorf("%q: route %d, want %d", q, got, want)
		}
	}
	if got := classifyRequest("/cgi-bin/token", "component_access_token=x"); got != routeBlocked {
		t.Errorf("token endpoint with own credential: route %d, want blocked", got)
	}
	if got := classifyRequest("/sns/component/jscode2session", "component_access_token=x"); got != routeOwnCred {
		t.Errorf("component login: route %d, want own (no secret added)", got)
	}
}

func TestCanonicalPath(t *testing.T) {
	u, _ := url.Parse("/cgi-bin/token%2f..%2f..%2fsns%2fjscode2session")
	if got := canonicalPath(u.Path); got != "/sns/jscode2session" {
		t.Errorf("canonical %q", got)
	}
	for in, want := range map[string]string{"": "/", "//a//b/": "/a/b", "/A/./B": "/A/B", "a": "/a"} {
		if got := canonicalPath(in); got != want {
			t.Errorf("canonicalPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsRidGet(t *testing.T) {
	for p, want := range map[string]bool{
		"/cgi-bin/openapi/rid/get": true, "/CGI-BIN/OpenAPI/RID/GET/": true, "/x/../cgi-bin/openapi/rid//get": true,
		"/cgi-bin/openapi/rid/get/..": false, "/cgi-bin/openapi/rid/get/.": true, "/cgi-bin/openapi/rid/GET/x/..": true, "/cgi-bin/user/get": false, "/cgi-bin/user/info": false, "": false,
	} {
		if got := isRidGet(p); got != want {
			t.Errorf("isRidGet(%q) = %v", p, got)
		}
	}
}
