package wechat

import (
	"fmt"
	"strings"

	"github.com/caddy-wechat/wechat/caddykit"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// UnmarshalCaddyfile reads the transport's block inside reverse_proxy:
//
//	reverse_proxy https://api.weixin.qq.com {
//	    transport wechat {
//	        appid  {env.WECHAT_APPID}
//	        secret {env.WECHAT_SECRET}
//	        # every account subdirective of the wechat directive, and
//	        # every subdirective of the http transport (tls, keepalive, ...)
//	    }
//	}
//
// Without it the embedded HTTPTransport's unmarshaler would be promoted,
// and it knows no appid. Here `upstream` names only the token endpoints:
// keep it in step with reverse_proxy's upstreams.
func (t *Transport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	err := caddykit.UnmarshalTransport(d, &t.HTTPTransport, t.parseOption, func(d *caddyfile.Dispenser, name string) error {
		return unknownSubdirective(d, "transport wechat", name, "the http transport's")
	})
	if err != nil {
		return err
	}
	_, err = t.finishCaddyfile(d)
	return err
}

// accountOptions are the names parseOption knows, for "did you mean".
var accountOptions = []string{
	"appid", "secret", "corpid", "corpsecret", "upstream", "token_api",
	"store", "memcache", "memcache_prefix", "memcache_timeout",
	"fetch_timeout", "fetch_ceiling", "min_token_age", "dial_timeout",
	"response_header_timeout", "max_replay_body", "max_buffered_bytes",
	"body_read_timeout", "keep_caller_auth", "quota_warn", "sdk_token_endpoints",
}

// unknownSubdirective names a word that neither we nor the parser we
// hand the rest to (other; "" for none) know, with a suggestion for a
// near miss: otherwise a typo such as `secert` surfaces later as "secret
// is required".
func unknownSubdirective(d *caddyfile.Dispenser, directive, name, other string) error {
	msg := fmt.Sprintf("unknown subdirective %q", name)
	candidates := accountOptions
	if directive == "wechat_jssdk" {
		candidates = append(candidates[:len(candidates):len(candidates)], "raw_token")
	}
	if s := suggest(name, candidates); s != "" {
		msg += " (did you mean " + s + "?)"
	}
	msg += ": it is not a " + directive + " subdirective"
	if other != "" {
		msg += ", nor one of " + other
	}
	return d.Err(msg)
}

// suggest returns the candidate closest to name, if it is a near miss.
func suggest(name string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		limit := 2
		if len(c) <= 4 {
			limit = 1
		}
		if d := editDistance(name, c); d <= limit && d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance counts insertions, deletions, substitutions and swaps of
// two adjacent letters (optimal string alignment).
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

// isProxySubdirective asks reverse_proxy's own parser whether it knows
// name, so the wechat directive passes real subdirectives on and names
// typos, with no list of ours to fall out of date.
func isProxySubdirective(name string) bool {
	if strings.HasPrefix(name, "@") {
		return true // a response matcher
	}
	return caddykit.KnownTo(name, "reverse_proxy", func(d *caddyfile.Dispenser) error {
		return new(reverseproxy.Handler).UnmarshalCaddyfile(d)
	})
}

// wrapBlock puts subdirective tokens back into a `name { ... }` block,
// for a parser that reads one.
func wrapBlock(name string, toks []caddyfile.Token) []caddyfile.Token {
	first, last := toks[0], toks[len(toks)-1]
	out := []caddyfile.Token{
		{File: first.File, Line: first.Line - 1, Text: name},
		{File: first.File, Line: first.Line - 1, Text: "{"},
	}
	out = append(out, toks...)
	return append(out, caddyfile.Token{File: last.File, Line: last.Line + 1, Text: "}"})
}

var _ caddyfile.Unmarshaler = (*Transport)(nil)
