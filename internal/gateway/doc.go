// Package gateway is the request path of every caddy-wechat transport,
// with no Caddy in it: the one loop (token → send → sniff → evidence →
// replay → confirm → scrub) written once over a Credential, the way
// golang.org/x/oauth2 writes Transport once over any TokenSource.
//
// A transport (the account's wechat, the open platform's
// wechat_component) only describes each call as an Outbound: the path
// sent upstream, its Route, the Credential, and its Host (counters, the
// Needles no answer may carry, the redaction of errors). Path holds the
// settings and the Server, which is what only the HTTP server can give
// (Caddy's, in the root package). So every rule of README "How it works"
// holds on every path, because there is one path:
//
//   - query.go: which credential a call gets, and the request target;
//   - upstreamheader.go: the header policy (caller credentials stripped,
//     Accept-Encoding narrowed to gzip);
//   - requestbody.go: the body held for the one replay, within a
//     process-wide reservation;
//   - sniff.go: the errcode of a small answer, read without buffering
//     large ones;
//   - scrub.go, ridredact.go: no answer carries a credential; rid/get is
//     redacted field by field, judged on the path sent;
//   - placeholder.go: the SDK mode's placeholder, which never leaves.
package gateway
