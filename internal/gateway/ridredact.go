package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
)

// credentialKey reports a parameter or JSON key that names a credential,
// read the lenient way (unescaped, trimmed, any case). Anything called a
// secret, a token or a ticket is redacted: rid/get must not become a way
// to read back an open-platform, WeCom or user credential either.
func credentialKey(k string) bool {
	k = strings.ToLower(paramName(k))
	return strings.Contains(k, "secret") || strings.Contains(k, "token") || strings.HasSuffix(k, "ticket") ||
		k == "session_key" || k == "password"
}

// redactRidAnswer rewrites request.request_url, request_body and
// response_body (a token fetch's answer holds a token) of a rid/get answer; anything it cannot decode is returned as is (the
// needle scrub still runs over it).
func redactRidAnswer(data []byte) []byte {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return data
	}
	raw, ok := top["request"]
	if !ok {
		return data
	}
	var req map[string]json.RawMessage
	if json.Unmarshal(raw, &req) != nil {
		return data
	}
	for _, f := range []struct {
		key    string
		redact func(string) string
	}{{"request_url", redactURLString}, {"request_body", redactBodyString}, {"response_body", redactBodyString}} {
		var s string
		if v, ok := req[f.key]; !ok || json.Unmarshal(v, &s) != nil {
			continue
		}
		b, _ := json.Marshal(f.redact(s))
		req[f.key] = b
	}
	var err error
	if top["request"], err = json.Marshal(req); err != nil {
		return data
	}
	out, err := json.Marshal(top)
	if err != nil {
		return data
	}
	return out
}

// redactURLString redacts the credential values of a query string, or of
// the query of a full URL.
func redactURLString(s string) string {
	if i := strings.IndexByte(s, '?'); i >= 0 {
		return s[:i+1] + redactQuery(s[i+1:])
	}
	return redactQuery(s)
}

// redactQuery keeps every parameter and its order, and replaces the value
// of each credential.
func redactQuery(q string) string {
	parts := strings.Split(q, "&")
	for i, p := range parts {
		k, _, has := strings.Cut(p, "=")
		if has && credentialKey(k) {
			parts[i] = k + "=" + RedactedMark
		}
	}
	return strings.Join(parts, "&")
}

// redactBodyString redacts a JSON body key by key, at any depth, or else a
// form-encoded body.
func redactBodyString(s string) string {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
		d := json.NewDecoder(strings.NewReader(t))
		d.UseNumber()
		var v any
		if d.Decode(&v) == nil {
			var b bytes.Buffer
			e := json.NewEncoder(&b)
			e.SetEscapeHTML(false)
			if e.Encode(redactJSON(v)) == nil {
				return strings.TrimSuffix(b.String(), "\n")
			}
		}
		return s
	}
	if strings.Contains(s, "=") {
		return redactQuery(s)
	}
	return s
}

func redactJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if credentialKey(k) {
				if _, isObj := e.(map[string]any); !isObj {
					x[k] = RedactedMark
					continue
				}
			}
			x[k] = redactJSON(e)
		}
	case []any:
		for i, e := range x {
			x[i] = redactJSON(e)
		}
	}
	return v
}
