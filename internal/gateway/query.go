package gateway

import (
	"net/url"
	"path"
	"strings"
	"unsafe"
)

// Route says what the gateway adds to a request, by WeChat path.
type Route uint8

const (
	RouteToken     Route = iota // ordinary API call: add our access_token
	RouteLogin                  // /sns login: add appid and secret, no token
	RouteAppIDOnly              // /sns/oauth2/refresh_token: add appid only
	RouteUserSNS                // other /sns calls carry the user's own OAuth token: leave it
	RouteBlocked                // the token endpoints themselves are the gateway's
	RouteOwnCred                // the caller's own credential is in the query: add nothing, never replay
	RouteNone                   // the open platform: no credential can be chosen (no authorizer named)

	// The open platform's routes (wechat_component); an authorizer's
	// calls are routeToken with the authorizer's token.
	RouteComponent         // /cgi-bin/component/*: add component_access_token
	RouteComponentSNS      // /sns/component/*, /sns/oauth2/component/*: add component_appid and component_access_token
	RouteComponentSNSNamed // the same for a named authorizer: its appid replaces the caller's
)

// AddsToken reports the routes that carry one of the gateway's tokens, and
// so take part in the replay.
func (r Route) AddsToken() bool {
	return r == RouteToken || r >= RouteComponent
}

// classify picks the route from the cleaned, lower-cased path, so that
// "//sns/x", "/cgi-bin/../sns/x" or "/CGI-BIN/TOKEN" are judged the way a
// lenient server might read them. ToLower does not allocate for a path
// that is already lower case.
func classify(p string) Route {
	if p == "" {
		p = "/"
	}
	p = strings.ToLower(path.Clean(p))
	switch p {
	case "/sns/jscode2session", "/sns/oauth2/access_token", "/sns/component/jscode2session":
		return RouteLogin
	case "/sns/oauth2/refresh_token":
		return RouteAppIDOnly
	case "/cgi-bin/token", "/cgi-bin/stable_token", "/cgi-bin/gettoken":
		return RouteBlocked
	}
	if strings.HasPrefix(p, "/sns/") {
		return RouteUserSNS
	}
	return RouteToken
}

// componentBlocked are the component endpoints the gateway owns: calling
// them with its component token would fetch or rotate credentials behind
// its back (a rotated refresh token the gateway never sees is a merchant
// lost).
func componentBlocked(clean string) bool {
	switch clean {
	case "/cgi-bin/component/api_component_token", "/cgi-bin/component/api_authorizer_token", "/cgi-bin/component/api_query_auth":
		return true
	}
	return false
}

// ComponentRoute is the Route of a call on the open platform, from its
// cleaned, lower-cased path and whether it names an authorizer.
func ComponentRoute(clean string, named bool) Route {
	switch {
	case classify(clean) == RouteBlocked || componentBlocked(clean):
		return RouteBlocked
	case strings.HasPrefix(clean, "/sns/component/") || strings.HasPrefix(clean, "/sns/oauth2/component/"):
		// Login and web OAuth on behalf of an authorizer: the component
		// vouches with its appid and token.
		if named {
			return RouteComponentSNSNamed
		}
		return RouteComponentSNS
	case strings.HasPrefix(clean, "/sns/"):
		return RouteUserSNS // the user's own OAuth token: untouched
	case named:
		return RouteToken // the authorizer's access_token
	case strings.HasPrefix(clean, "/cgi-bin/component/"):
		return RouteComponent
	}
	return RouteNone
}

// ClassifyRequest is classify, plus the calls that carry a credential of
// their own (open platform, WeCom providers). WeChat may answer those with
// 40001 whatever our token, so adding ours, or replaying, would only burn
// fetches. The token endpoints stay blocked whatever the query holds.
func ClassifyRequest(p, rawQuery string) Route {
	r := classify(p)
	if r != RouteBlocked && carriesOwnCredential(rawQuery) {
		return RouteOwnCred
	}
	return r
}

// CanonicalPath is the path the route is judged on (decoded, cleaned) in
// the letter case the caller sent, so that what goes upstream is what was
// judged: "/cgi-bin/token%2f..%2f..%2fsns%2fx" leaves as "/sns/x".
func CanonicalPath(p string) string {
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
func rewriteQuery(raw string, r Route, token, appid, secret string) string {
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
func requestTarget(dst []byte, p, raw string, r Route, token, appid, secret, authorizer string) string {
	var key, val string // the credential added, pre-escaped
	switch r {
	case RouteToken:
		key, val = "access_token=", token
	case RouteComponent:
		key, val = "component_access_token=", token
	case RouteComponentSNS:
		key, val = "component_appid=", url.QueryEscape(appid)+"&component_access_token="+token
	case RouteComponentSNSNamed:
		key, val = "appid=", url.QueryEscape(authorizer)+"&component_appid="+url.QueryEscape(appid)+"&component_access_token="+token
	case RouteLogin:
		key, val = "appid=", url.QueryEscape(appid)+"&secret="+url.QueryEscape(secret)
	case RouteAppIDOnly:
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
	case r == RouteToken && !mayHoldCredential(raw):
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
func isCredential(part string, r Route) bool {
	key := queryKey(part)
	if strings.EqualFold(key, pAccessToken) || strings.EqualFold(key, pSecret) ||
		strings.EqualFold(key, pComponentToken) || strings.EqualFold(key, pComponentSecret) {
		return true
	}
	switch r {
	case RouteToken, RouteComponent:
		// appid is a credential only where the gateway injects it;
		// ordinary API calls may carry an appid of their own (a mini
		// program's, say).
		return false
	case RouteComponentSNS:
		return strings.EqualFold(key, pComponentAppID)
	case RouteComponentSNSNamed:
		return strings.EqualFold(key, pComponentAppID) || strings.EqualFold(key, pAppID)
	}
	return strings.EqualFold(key, pAppID)
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
