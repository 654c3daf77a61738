package integration

// Client-supplied credential parameters (issue 7) through a real Caddy.

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat"
)

// credKeys returns the values of every key in raw that names name once
// percent-decoded, trimmed and compared case-insensitively (ASCII): what a
// lenient server would read as that parameter.
func credKeys(raw, name string) []string {
	var vals []string
	for part := range strings.SplitSeq(raw, "&") {
		k, v, _ := strings.Cut(part, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if asciiEqualFold(strings.Trim(k, " \t\r\n\v\f"), name) {
			if dv, err := url.QueryUnescape(v); err == nil {
				v = dv
			}
			vals = append(vals, v)
		}
	}
	return vals
}

func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

const (
	clientToken  = "CLIENTTOKENxyz"
	clientSecret = "CLIENTSECRETxyz"
	clientAppID  = "wxCLIENTAPPIDxyz"
)

func TestClientCredentialParams(t *testing.T) {
	resetAccounts(t)
	setEnv(t)
	f := newFake(t)
	var seen reqLog
	logAll(f, &seen, nil)
	g := startCaddy(t, basicConfig(f.URL, ""))
	waitOK(t, g.URL+"/cgi-bin/user/info", 5*time.Second)

	// Ordinary API calls: the client's access_token and secret are
	// dropped in every spelling; the gateway's token is the only one.
	tokenCases := []string{
		"access_token=" + clientToken,
		"ACCESS_TOKEN=" + clientToken,
		"Access_Token=" + clientToken,
		"access_token=" + clientToken + "&access_token=" + clientToken + "2",
		"access_token=" + clientToken + "&openid=o1&ACCESS_token=" + clientToken + "2",
		"acc%65ss_token=" + clientToken,
		"access%5Ftoken=" + clientToken,
		"%61%63%63%65%73%73%5F%74%6F%6B%65%6E=" + clientToken,
		"access_token%20=" + clientToken,
		"%20access_token=" + clientToken,
		"access_token+=" + clientToken,
		"+access_token=" + clientToken,
		"%09access_token%0A=" + clientToken,
		"access_token",
		"access_token=",
		"access_token=&access_token",
		"secret=" + clientSecret,
		"SECRET=" + clientSecret,
		"secr%65t=" + clientSecret,
		"secret+=" + clientSecret + "&secret=" + clientSecret,
		"access_token%=" + clientToken,
		"a=1&&&access_token=" + clientToken + "&&b=2",
	}
	for _, q := range tokenCases {
		t.Run("api?"+q, func(t *testing.T) {
			before := len(seen.all())
			r := get(t, g.URL+"/cgi-bin/user/info?openid=o1&"+q)
			if r.Status != 200 || r.errcode() != 0 {
				t.Errorf("status %d body %s", r.Status, r.Body)
			}
			got := seen.since(before)
			if len(got) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(got))
			}
			raw := got[0].RawQuery
			if toks := credKeys(raw, "access_token"); len(toks) != 1 || toks[0] != f.CurrentStable() {
				t.Errorf("upstream query %q has access_token %q, want exactly the gateway's", raw, toks)
			}
			if s := credKeys(raw, "secret"); len(s) != 0 {
				t.Errorf("client secret forwarded: %q", raw)
			}
			if strings.Contains(raw, clientToken) || strings.Contains(raw, clientSecret) {
				t.Errorf("client credential value forwarded: %q", raw)
			}
			if q := f.LastAPIQuery(); len(q["access_token"]) != 1 || q.Get("access_token") != f.CurrentStable() || q.Get("openid") != "o1" {
				t.Errorf("LastAPIQuery %v", q)
			}
		})
	}

	// An appid on an ordinary API call is the client's business (some
	// APIs take another app's appid): forwarded unchanged.
	t.Run("api appid kept", func(t *testing.T) {
		before := len(seen.all())
		get(t, g.URL+"/cgi-bin/user/info?appid="+clientAppID)
		got := seen.since(before)
		if len(got) != 1 || strings.Join(credKeys(got[0].RawQuery, "appid"), ",") != clientAppID {
			t.Errorf("upstream saw %v, want the client's appid kept", got)
		}
	})

	// Login: the gateway's appid and secret replace the client's, in
	// every spelling; an access_token (ours or theirs) is never sent.
	loginCases := []string{
		"",
		"appid=" + clientAppID + "&secret=" + clientSecret,
		"APPID=" + clientAppID + "&Secret=" + clientSecret,
		"app%69d=" + clientAppID + "&secr%65t=" + clientSecret,
		"appid=" + clientAppID + "&appid=" + clientAppID + "2&secret=" + clientSecret + "&secret=",
		"+appid+=" + clientAppID + "&%20secret=" + clientSecret,
		"access_token=" + clientToken,
		"ACCESS_TOKEN=" + clientToken + "&appid=" + clientAppID,
	}
	for _, q := range loginCases {
		t.Run("jscode2session?"+q, func(t *testing.T) {
			before := len(seen.all())
			r := get(t, g.URL+"/sns/jscode2session?js_code=C1&grant_type=authorization_code&"+q)
			if r.Status != 200 || r.errcode() != 0 || r.JSON["openid"] == nil {
				t.Errorf("login failed: %d %s", r.Status, r.Body)
			}
			if strings.Contains(string(r.Body), testSecret) {
				t.Error("the gateway's secret reached the client")
			}
			got := seen.since(before)
			if len(got) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(got))
			}
			raw := got[0].RawQuery
			if a := credKeys(raw, "appid"); len(a) != 1 || a[0] != testAppID {
				t.Errorf("upstream appid %q in %q, want exactly the gateway's", a, raw)
			}
			if s := credKeys(raw, "secret"); len(s) != 1 || s[0] != testSecret {
				t.Errorf("upstream secret count %d in query, want exactly the gateway's", len(s))
			}
			if tk := credKeys(raw, "access_token"); len(tk) != 0 {
				t.Errorf("access_token sent to a login endpoint: %q", raw)
			}
			if strings.Contains(raw, clientAppID) || strings.Contains(raw, clientSecret) || strings.Contains(raw, clientToken) {
				t.Errorf("client credential forwarded: %q", raw)
			}
		})
	}

	// refresh_token takes appid only: the client's secret is dropped too.
	t.Run("oauth2 refresh_token", func(t *testing.T) {
		before := len(seen.all())
		get(t, g.URL+"/sns/oauth2/refresh_token?grant_type=refresh_token&refresh_token=R&appid="+clientAppID+"&secret="+clientSecret)
		got := seen.since(before)
		if len(got) != 1 {
			t.Fatalf("upstream got %d requests", len(got))
		}
		raw := got[0].RawQuery
		if a := credKeys(raw, "appid"); len(a) != 1 || a[0] != testAppID {
			t.Errorf("appid %q, want the gateway's", a)
		}
		if len(credKeys(raw, "secret")) != 0 || len(credKeys(raw, "access_token")) != 0 {
			t.Errorf("secret or token sent with refresh_token: %q", raw)
		}
	})

	// Other /sns calls carry the user's own OAuth token: untouched, and
	// the gateway's token never goes there.
	t.Run("sns user token untouched", func(t *testing.T) {
		r := get(t, g.URL+"/sns/oauth2/access_token?grant_type=authorization_code&code=CODE1")
		user, _ := r.JSON["access_token"].(string)
		if user == "" {
			t.Fatalf("no user token: %s", r.Body)
		}
		before := len(seen.all())
		q := "access_token=" + url.QueryEscape(user) + "&openid=o1&lang=zh_CN"
		r = get(t, g.URL+"/sns/userinfo?"+q)
		got := seen.since(before)
		if len(got) != 1 || got[0].RawQuery != q {
			t.Fatalf("upstream saw %v, want the query %q unchanged", got, q)
		}
		if strings.Contains(got[0].RawQuery, f.CurrentStable()) {
			t.Error("the gateway's token was sent to /sns/userinfo")
		}
		if r.Status != 200 || r.errcode() != 0 {
			t.Errorf("userinfo: %d %s", r.Status, r.Body)
		}
	})

	// The token endpoints are the gateway's own, however the path is
	// spelled: they answer with the placeholder and send nothing upstream.
	for _, p := range []string{"/cgi-bin/token?grant_type=client_credential&appid=" + clientAppID + "&secret=" + clientSecret,
		"/cgi-bin/stable_token", "/cgi-bin/gettoken?corpid=c&corpsecret=s", "/cgi-bin/../cgi-bin/token",
		"/cgi-bin/%2e%2e/cgi-bin/stable_token", "//cgi-bin//token", "/cgi-bin/stable_token/", "/x/..%2fcgi-bin%2ftoken"} {
		t.Run("placeholder "+p, func(t *testing.T) {
			before := len(seen.all())
			r := rawDo(strings.TrimPrefix(g.URL, "http://"), "GET "+p+" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
			if r.Status != http.StatusOK || !strings.Contains(r.Body, wechat.PlaceholderPrefix) {
				t.Errorf("status %d (%v) body %q, want 200 with the placeholder", r.Status, r.Err, r.Body)
			}
			if got := seen.since(before); len(got) != 0 {
				t.Errorf("forwarded to the upstream: %v", got)
			}
		})
	}

	// Nothing the gateway logged holds its secret or token.
	logText := readFile(t, g.LogFile)
	if strings.Contains(logText, testSecret) || strings.Contains(logText, f.CurrentStable()) {
		t.Error("the Caddy log holds the gateway's secret or token")
	}
}
