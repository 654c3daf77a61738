package gateway

import (
	"maps"
	"net/http"
	"strings"
)

// CallerCredentialHeaders are the caller's own credentials, such as the
// basic_auth of the README's guard: WeChat has no use for them, so they
// never leave the gateway unless keep_caller_auth says otherwise.
var CallerCredentialHeaders = [...]string{"Authorization", "Proxy-Authorization", "Cookie"}

// upstreamHeader returns the headers to send to WeChat, on every path:
// the caller's credential headers removed (unless keepAuth), the
// gateway's own header drop removed, and Accept-Encoding narrowed to gzip
// (or nothing), the one encoding the scrub can see through; identity asks
// for none, for an answer that is rewritten whole. The caller's map is
// never changed (reverse_proxy sends it again on a retry); a request with
// nothing to change costs a few lookups.
func upstreamHeader(h http.Header, keepAuth bool, drop string, identity bool) http.Header {
	strip := false
	if drop != "" {
		_, strip = h[drop]
	}
	if !keepAuth && !strip {
		for _, k := range CallerCredentialHeaders {
			if _, ok := h[k]; ok {
				strip = true
				break
			}
		}
	}
	ae, hasAE := h["Accept-Encoding"]
	fixAE := hasAE && (identity || !(len(ae) == 1 && strings.EqualFold(ae[0], "gzip")))
	if !strip && !fixAE {
		return h
	}
	// A shallow copy: values are only ever replaced or deleted here,
	// never written in place, so sharing the caller's slices is safe and
	// costs one map instead of a copy of every value.
	out := maps.Clone(h)
	if strip {
		if !keepAuth {
			for _, k := range CallerCredentialHeaders {
				delete(out, k)
			}
		}
		if drop != "" {
			delete(out, drop)
		}
	}
	if fixAE {
		if !identity && acceptsGzip(ae) {
			out["Accept-Encoding"] = []string{"gzip"}
		} else {
			delete(out, "Accept-Encoding")
		}
	}
	return out
}

func acceptsGzip(vals []string) bool {
	for _, v := range vals {
		for part := range strings.SplitSeq(v, ",") {
			name, q, _ := strings.Cut(part, ";")
			qv := strings.TrimPrefix(strings.ReplaceAll(q, " ", ""), "q=")
			if strings.EqualFold(strings.TrimSpace(name), "gzip") && (qv == "" || strings.Trim(qv, "0.") != "") {
				return true
			}
		}
	}
	return false
}
