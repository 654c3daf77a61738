package gateway

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"path"
	"strings"
)

// PlaceholderPrefix starts every placeholder token the gateway hands out.
// It is the same in every process, so any instance of a cluster recognizes
// a placeholder that another instance issued.
const PlaceholderPrefix = "CADDY_WECHAT_PLACEHOLDER_"

// Placeholder is this process's token for SDKs: the prefix plus a random
// part, so it cannot be mistaken for, or collide with, a real token.
var Placeholder = func() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return PlaceholderPrefix + hex.EncodeToString(b[:])
}()

// placeholderTTL is what SDKs are told, WeChat's own lifetime, so they
// cache the placeholder as long as they would a real token.
const placeholderTTL = 7200

// PlaceholderToken answers a token endpoint in the shape the SDK expects,
// without sending anything upstream. The client's appid and secret are not
// read: they would be worthless here and must go nowhere.
func PlaceholderToken(req *http.Request) *http.Response {
	var v any = struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}{Placeholder, placeholderTTL}
	if strings.HasSuffix(strings.ToLower(path.Clean("/"+req.URL.Path)), "/gettoken") {
		// WeCom SDKs check errcode; gettoken always carries it.
		v = struct {
			ErrCode     int    `json:"errcode"`
			ErrMsg      string `json:"errmsg"`
			AccessToken string `json:"access_token"`
			ExpiresIn   int    `json:"expires_in"`
		}{0, "ok", Placeholder, placeholderTTL}
	}
	return ownAnswer(req, http.StatusOK, "application/json; encoding=utf-8", "placeholder", v)
}

// HoldsPlaceholder reports whether s carries a placeholder of any gateway,
// in any letter case and after one round of percent-decoding. It is the
// last check before a request leaves, independent of the query rewrite:
// whatever route a request takes, a placeholder never reaches WeChat.
func HoldsPlaceholder(s string) bool {
	if s == "" {
		return false
	}
	if containsPlaceholderFold(s, PlaceholderPrefix) {
		return true
	}
	if strings.ContainsAny(s, "%+") {
		if u, err := url.QueryUnescape(s); err == nil && containsPlaceholderFold(u, PlaceholderPrefix) {
			return true
		}
		// An undecodable escape may still be read by someone's decoder.
		return containsPlaceholderFold(strings.ReplaceAll(s, "%", ""), PlaceholderPrefix)
	}
	return false
}

// containsPlaceholderFold is a case-insensitive strings.Contains for a needle whose
// byte at foldAnchor is '_', a byte without case: IndexByte jumps from one
// '_' to the next, so the check stays cheap on every header of every
// request, and it never allocates.
func containsPlaceholderFold(s, needle string) bool {
	for off := 0; ; {
		i := strings.IndexByte(s[off:], '_')
		if i < 0 {
			return false
		}
		if start := off + i - foldAnchor; start >= 0 && start+len(needle) <= len(s) && equalFoldUpper(s[start:start+len(needle)], needle) {
			return true
		}
		off += i + 1
	}
}

// containsPlaceholderFoldBytes is containsPlaceholderFold for a body, without copying it.
func containsPlaceholderFoldBytes(b []byte, needle string) bool {
	for off := 0; ; {
		i := bytes.IndexByte(b[off:], '_')
		if i < 0 {
			return false
		}
		if start := off + i - foldAnchor; start >= 0 && start+len(needle) <= len(b) && equalFoldUpperBytes(b[start:start+len(needle)], needle) {
			return true
		}
		off += i + 1
	}
}

// equalFoldUpper compares s with an upper-case ASCII needle; only letters
// fold, so no other byte can stand in for '_'.
func equalFoldUpper(s, upper string) bool {
	for i := 0; i < len(upper); i++ {
		if c, u := s[i], upper[i]; c != u && !('A' <= u && u <= 'Z' && c == u+('a'-'A')) {
			return false
		}
	}
	return true
}

// foldAnchor is the index of a '_' in PlaceholderPrefix ("CADDY_WECHAT_").
const foldAnchor = 12

// refusePlaceholder returns the gateway's own 400 when out's URL or headers
// carry a placeholder, and nil when out may be sent. The errcode is not a
// token error, so nothing is invalidated or replayed.
func refusePlaceholder(out *http.Request) *http.Response {
	u := out.URL
	bad := HoldsPlaceholder(u.Opaque) || HoldsPlaceholder(u.RawQuery) || HoldsPlaceholder(u.Path) || HoldsPlaceholder(u.RawPath)
	for name, vals := range out.Header {
		for _, v := range vals {
			bad = bad || HoldsPlaceholder(v)
		}
		bad = bad || HoldsPlaceholder(name)
	}
	if !bad {
		return nil
	}
	return ErrorResponse(out, http.StatusBadRequest, 40097,
		"caddy-wechat: the request carries the gateway's placeholder token outside access_token; it was not sent")
}

// bodyHoldsPlaceholder checks a buffered request body, in any letter case.
// WeChat never takes the token in a body, so one found there is an SDK
// bug; refuse it rather than pass it on.
func bodyHoldsPlaceholder(data []byte) bool {
	return len(data) >= len(PlaceholderPrefix) && containsPlaceholderFoldBytes(data, PlaceholderPrefix)
}

func equalFoldUpperBytes(b []byte, upper string) bool {
	for i := 0; i < len(upper); i++ {
		if c, u := b[i], upper[i]; c != u && !('A' <= u && u <= 'Z' && c == u+('a'-'A')) {
			return false
		}
	}
	return true
}
