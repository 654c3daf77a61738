package wechat

import (
	"net/url"
	"path"
	"strings"
	"unsafe"
)

// route says what the gateway adds to a request, by WeChat path.
type route uint8

const (
	routeToken     route = iota // ordinary API call: add our access_token
	routeLogin                  // /sns login: add appid and secret, no token
	routeAppIDOnly              // /sns/oauth2/refresh_token: add appid only
	routeUserSNS                // other /sns calls carry the user's own OAuth token: leave it
	routeBlocked                // the token endpoints themselves are the gateway's
	routeOwnCred                // the caller's own credential is in the query: add nothing, never replay
	routeNone                   // the open platform: no credential can be chosen (no authorizer named)

	// The open platform's routes (wechat_component); an authorizer's
	// calls are routeToken with the authorizer's token.
	routeComponent         // /cgi-bin/component/*: add component_access_token
	routeComponentSNS      // /sns/component/*, /sns/oauth2/component/*: add component_appid and component_access_token
	routeComponentSNSNamed // the same for a named authorizer: its appid replaces the caller's
)

// addsToken reports the routes that carry one of the gateway's tokens, and
// so take part in the replay.
func (r route) addsToken() bool {
	return r == routeToken || r >= routeComponent
}

// classify picks the route from the cleaned, lower-cased path, so that
// "//sns/x", "/cgi-bin/../sns/x" or "/CGI-BIN/TOKEN" are judged the way a
// lenient server might read them. ToLower does not allocate for a path
// that is already lower case.
func classify(p string) route {
	if p == "" {
		p = "/"
	}
	p = strings.ToLower(path.Clean(p))
	switch p {
	case "/sns/jscode2session", "/sns/oauth2/access_token", "/sns/component/jscode2session":
		return routeLogin
	case "/sns/oauth2/refresh_token":
		return routeAppIDOnly
	case "/cgi-bin/token", "/cgi-bin/stable_token", "/cgi-bin/gettoken":
		return routeBlocked
	}
	if strings.HasPrefix(p, "/sns/") {
		return routeUserSNS
	}
	return routeToken
}

// classifyRequest is classify, plus the calls that carry a credential of
// their own (open platform, WeCom providers). WeChat may answer those with
// 40001 whatever our token, so adding ours, or replaying, would only burn
// fetches. The token endpoints stay blocked whatever the query holds.
func classifyRequest(p, rawQuery string) route {
	r := classify(p)
	if r != routeBlocked && carriesOwnCredential(rawQuery) {
		return routeOwnCred
	}
	return r
}

// canonicalPath is the path the route is judged on (decoded, cleaned) in
// the letter case the caller sent, so that what goes upstream is what was
// judged: "/cgi-bin/token%2f..%2f..%2fsns%2fx" leaves as "/sns/x".
func canonicalPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	return path.Clean(p) // no allocation for a path already clean
}

// credential parameter names the gateway owns. A client's copy of any of
// them, in any letter case and however escaped, is dropped.
const (
	pAccessToken     = "access_token"
	pSecret          = "secret"
	pAppID           = "appid"
	pComponentToken  = "component_access_token"
	pComponentSecret = "component_appsecret"
	pComponentAppID  = "component_appid"
)

// queryKey is the name of one "k=v" query part as a lenient server might
// read it: unescaped (or, undecodable, with its escapes removed, since
// someone else's decoder could still read it) and trimmed of spaces. Every
// judgement of a query name (what to drop, what is the caller's own
// credential, what rid/get redacts) reads names through it.
func queryKey(part string) string {
	key, _, _ := strings.Cut(part, "=")
	return paramName(key)
}

// paramName is queryKey for a name alone (a JSON key may hold '=').
func paramName(key string) string {
	if k, err := url.QueryUnescape(key); err == nil {
		key = k
	} else {
		key = strings.ReplaceAll(key, "%", "")
	}
	return strings.TrimSpace(key)
}

// rewriteQuery returns raw with the client's credential parameters removed
// and the gateway's appended. For the common case, a query with no
// credential-looking text, it only appends: no parsing, one allocation.
func rewriteQuery(raw string, r route, token, appid, secret string) string {
	return requestTarget(nil, "", raw, r, token, appid, secret, "")
}

// requestTarget is rewriteQuery's query after the escaped path p and a
// '?' (p alone for an empty query): the whole target of the request line.
// With p empty it is the query alone.
//
// It is built in dst when dst has room (send passes the spare bytes of
// its request copy, so the common target costs no allocation of its own)
// and else in one allocation. The string aliases those bytes: the caller
// must never write to dst again.
//
// On the component's routes appid is the component's and authorizer the
// merchant a call names.
func requestTarget(dst []byte, p, raw string, r route, token, appid, secret, authorizer string) string {
	var key, val string // the credential added, pre-escaped
	switch r {
	case routeToken:
		key, val = "access_token=", token
	case routeComponent:
		key, val = "component_access_token=", token
	case routeComponentSNS:
		key, val = "component_appid=", url.QueryEscape(appid)+"&component_access_token="+token
	case routeComponentSNSNamed:
		key, val = "appid=", url.QueryEscape(authorizer)+"&component_appid="+url.QueryEscape(appid)+"&component_access_token="+token
	case routeLogin:
		key, val = "appid=", url.QueryEscape(appid)+"&secret="+url.QueryEscape(secret)
	case routeAppIDOnly:
		key, val = "appid=", url.QueryEscape(appid)
	default:
		switch {
		case p == "":
			return raw
		case raw == "":
			return p
		}
	}
	b := dst[:0]
	if n := len(p) + 1 + len(raw) + 1 + len(key) + len(val); cap(b) < n {
		b = make([]byte, 0, n)
	}
	if p != "" {
		b = append(b, p...)
		b = append(b, '?')
	}
	switch {
	case key == "":
		b = append(b, raw...)
	case r == routeToken && !mayHoldCredential(raw):
		// The common case, a query with nothing credential-like: as is.
		if raw != "" {
			b = append(b, raw...)
			b = append(b, '&')
		}
	default:
		for part := range strings.SplitSeq(raw, "&") {
			if part == "" || isCredential(part, r) {
				continue
			}
			b = append(b, part...)
			b = append(b, '&')
		}
	}
	b = append(b, key...)
	b = append(b, val...)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// mayHoldCredential is a cheap over-approximation: any escape, '+', or a
// case-insensitive "access_token" or "secret" anywhere sends the query down
// the careful path.
func mayHoldCredential(raw string) bool {
	if strings.ContainsAny(raw, "%+") {
		return true
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i] | 0x20; c == 'a' || c == 's' {
			if hasPrefixFold(raw[i:], pAccessToken) || hasPrefixFold(raw[i:], pSecret) {
				return true
			}
		}
	}
	return false
}

// isCredential reports whether the key of one "k=v" query part names a
// credential the gateway owns on route r (read by queryKey, in any case).
// The open platform's token and secret are dropped on every route: on the
// account's a query naming them takes routeOwnCred and never gets here.
func isCredential(part string, r route) bool {
	key := queryKey(part)
	if strings.EqualFold(key, pAccessToken) || strings.EqualFold(key, pSecret) ||
		strings.EqualFold(key, pComponentToken) || strings.EqualFold(key, pComponentSecret) {
		return true
	}
	switch r {
	case routeToken, routeComponent:
		// appid is a credential only where the gateway injects it;
		// ordinary API calls may carry an appid of their own (a mini
		// program's, say).
		return false
	case routeComponentSNS:
		return strings.EqualFold(key, pComponentAppID)
	case routeComponentSNSNamed:
		return strings.EqualFold(key, pComponentAppID) || strings.EqualFold(key, pAppID)
	}
	return strings.EqualFold(key, pAppID)
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
