package gateway

import "strings"

// ownCredentialParams are credentials a caller brings for itself: an open
// platform's component token, a WeCom suite's or provider's.
var ownCredentialParams = [...]string{"component_access_token", "suite_access_token", "provider_access_token"}

// carriesOwnCredential reports whether a query names one of those, read
// the lenient way isCredential reads names. A query without "_access_token"
// in any case or escaping (the usual one) costs one scan.
func carriesOwnCredential(raw string) bool {
	if raw == "" || !mayHoldOwnCredential(raw) {
		return false
	}
	for part := range strings.SplitSeq(raw, "&") {
		key := queryKey(part)
		for _, p := range ownCredentialParams {
			if strings.EqualFold(key, p) {
				return true
			}
		}
	}
	return false
}

func mayHoldOwnCredential(raw string) bool {
	if strings.ContainsAny(raw, "%+") {
		return true
	}
	for i := 0; i < len(raw); i++ {
		if raw[i]|0x20 == 'a' && hasPrefixFold(raw[i:], pAccessToken) {
			return true
		}
	}
	return false
}
