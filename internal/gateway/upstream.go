package gateway

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
)

// DefaultUpstream is WeChat's API when a config names none.
const DefaultUpstream = "https://api.weixin.qq.com"

// ParseUpstreams checks the upstream URLs: http or https, a host, nothing
// else, and one scheme for all (they share one transport).
func ParseUpstreams(raw []string) ([]*url.URL, error) {
	if len(raw) == 0 {
		raw = []string{DefaultUpstream}
	}
	var out []*url.URL
	for _, s := range raw {
		if !strings.Contains(s, "://") {
			return nil, fmt.Errorf("bad upstream %q: the scheme is missing; write %s://%s", s, GuessScheme(s), s)
		}
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("bad upstream %q: %v", s, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("bad upstream %q: the scheme must be http or https", s)
		}
		if u.Host == "" || u.Hostname() == "" {
			return nil, fmt.Errorf("bad upstream %q: no host", s)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("bad upstream %q: give only scheme://host[:port]", s)
		}
		if len(out) > 0 && out[0].Scheme != u.Scheme {
			return nil, fmt.Errorf("upstreams mix http and https (%s, %s); use one scheme", out[0], u)
		}
		out = append(out, &url.URL{Scheme: u.Scheme, Host: u.Host})
	}
	return out, nil
}

// GuessScheme picks the scheme to show in the fix for a bare host:
// http for loopback and private addresses (a fake, a local proxy),
// https for names (WeChat's own hosts).
func GuessScheme(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "localhost" || net.ParseIP(host) != nil {
		return "http"
	}
	return "https"
}

var ridPattern = regexp.MustCompile(`\s*rid:\s*[0-9A-Za-z-]+`)

// StripRIDs removes every "rid: …" WeChat put in s: a client-facing
// message must not carry one, since rid/get on the rid of a token fetch
// returns the fetch's request, secret included.
func StripRIDs(s string) string { return ridPattern.ReplaceAllString(s, "") }
