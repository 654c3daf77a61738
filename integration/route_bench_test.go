package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// BenchmarkRoute counts a whole request through a real Caddy in this
// process: client, Caddy's server, the route's handler and transport, and
// the fake upstream (issue 13: the gateway must allocate no more per
// request than reverse_proxy does). Both routes hit the same fake with the
// same path; the proxy's client sends the token itself. The client and
// fake allocations are in every figure, so the difference is the
// gateway's.
//
//	go test -run '^$' -bench Route -benchmem -count 5 ./integration
func BenchmarkRoute(b *testing.B) {
	setEnv(b)
	f := newFake(b)
	tok := stableTokenOf(b, f.URL)
	gwPort, rpPort, rtPort, g0Port := freePort(b), freePort(b), freePort(b), freePort(b)
	loadCaddyfile(b, fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
}
http://127.0.0.1:%d {
	wechat {
		appid {env.TEST_WECHAT_APPID}
		secret {env.TEST_WECHAT_SECRET}
		upstream %s
	}
}
http://127.0.0.1:%d {
	wechat {
		appid {env.TEST_WECHAT_APPID}
		secret {env.TEST_WECHAT_SECRET}
		upstream %s
		response_header_timeout 0
	}
}
http://127.0.0.1:%d {
	reverse_proxy %s
}
http://127.0.0.1:%d {
	reverse_proxy %s {
		transport http {
			dial_timeout 3s
			response_header_timeout 30s
		}
	}
}
`, gwPort, f.URL, g0Port, f.URL, rpPort, f.URL[len("http://"):], rtPort, f.URL[len("http://"):]))
	b.Cleanup(func() { _ = caddy.Stop() })
	const path = "/cgi-bin/user/info?openid=o1&lang=zh_CN"
	for _, c := range []struct{ name, url string }{
		{"gateway", fmt.Sprintf("http://127.0.0.1:%d%s", gwPort, path)},
		// The gateway's transport defaults: response_header_timeout
		// costs net/http a timer per request.
		{"reverse_proxy_same_timeouts", fmt.Sprintf("http://127.0.0.1:%d%s&access_token=%s", rtPort, path, tok)},
		// Both without a response-header timeout (reverse_proxy's default).
		{"gateway_no_timeout", fmt.Sprintf("http://127.0.0.1:%d%s", g0Port, path)},
		{"reverse_proxy", fmt.Sprintf("http://127.0.0.1:%d%s&access_token=%s", rpPort, path, tok)},
	} {
		b.Run(c.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
			defer client.CloseIdleConnections()
			get := func() {
				resp, err := client.Get(c.url)
				if err != nil {
					b.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || len(body) == 0 {
					b.Fatalf("status %d: %s", resp.StatusCode, body)
				}
			}
			for range 200 { // warm the token, pools and connections
				get()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				get()
			}
		})
	}
}

// stableTokenOf asks the fake for the token, as an app behind a plain
// proxy must.
func stableTokenOf(tb testing.TB, fake string) string {
	tb.Helper()
	body := fmt.Sprintf(`{"grant_type":"client_credential","appid":%q,"secret":%q}`, testAppID, testSecret)
	resp, err := http.Post(fake+"/cgi-bin/stable_token", "application/json", strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var ans struct {
		Token string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil || ans.Token == "" {
		tb.Fatalf("stable_token: %v", err)
	}
	return ans.Token
}
