package wechat

import (
	"net/http"
	"strings"
)

// callerCredentialHeaders are the caller's own credentials, such as the
// basic_auth of the README's guard: WeChat has no use for them, so they
// never leave the gateway unless keep_caller_auth says otherwise.
var callerCredentialHeaders = [...]string{"Authorization", "Proxy-Authorization", "Cookie"}

// upstreamHeader returns the headers to send to WeChat: the caller's
// credential headers removed, and Accept-Encoding narrowed to gzip (or
// nothing), the one encoding the scrub can see through. The caller's map
// is never changed; a request with nothing to change costs a few lookups.
func (t *Transport) upstreamHeader(h http.Header) http.Header {
	strip := false
	if !t.KeepCallerAuth {
		for _, k := range callerCredentialHeaders {
			if _, ok := h[k]; ok {
				strip = true
				break
			}
		}
	}
	ae, hasAE := h["Accept-Encoding"]
	fixAE := hasAE && !(len(ae) == 1 && strings.EqualFold(ae[0], "gzip"))
	if !strip && !fixAE {
		return h
	}
	out := h.Clone()
	if strip {
		for _, k := range callerCredentialHeaders {
			delete(out, k)
		}
	}
	if fixAE {
		if acceptsGzip(ae) {
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
