package gateway

import (
	"net/http"
	"testing"
)

func TestUpstreamHeader(t *testing.T) {
	h := http.Header{"Authorization": {"Basic c3ZjOnB3"}, "Proxy-Authorization": {"x"}, "Cookie": {"sid=1"}, "Accept-Encoding": {"br, gzip;q=0.5"}, "X-Keep": {"1"}}
	keep := false
	out := upstreamHeader(h, keep, "", false)
	for _, k := range CallerCredentialHeaders {
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
	if got := upstreamHeader(http.Header{"Accept-Encoding": {"br"}}, keep, "", false); got.Get("Accept-Encoding") != "" {
		t.Errorf("br-only caller: Accept-Encoding %q, want none", got.Get("Accept-Encoding"))
	}
	plain := http.Header{"X-A": {"1"}}
	if got := upstreamHeader(plain, keep, "", false); &got == &plain || len(got) != 1 {
		t.Errorf("plain headers changed")
	}
	keep = true
	if upstreamHeader(h, keep, "", false).Get("Authorization") == "" {
		t.Error("keep_caller_auth dropped Authorization")
	}
}
