// Package credential is the gateway's credential engine: how a WeChat
// credential (access_token, JS-SDK ticket, and next the open platform's
// component and authorizer tokens) is fetched, cached, shared across a
// cluster, renewed and given up on. It imports nothing from Caddy; the
// Caddy modules are a thin layer over it.
//
// # Layers
//
// The layering follows golang.org/x/oauth2:
//
//   - Token: an immutable value with fetch and expiry times, clamped to
//     WeChat's 7200 s, with a pre-escaped value and a use-by time.
//   - Source: fetches one credential (oauth2.TokenSource). Optional
//     interfaces: Prober (a cheap validity check) and Forcer (stable
//     force_refresh). AccessTokenSource covers stable, classic and WeCom;
//     TicketSource gets a token from a token Cache.
//   - Cache: the ReuseTokenSource. A warm Token() is one atomic load and
//     no allocation; a cold one waits for a single-flighted fetch that runs
//     under the cache's own context, never a caller's, so a client hanging
//     up cancels nothing and Close cancels everything at once.
//   - Scheduler: refresh-ahead for every cache on one goroutine and a
//     timer heap. Stable renews 1–4.5 min before expiry, classic and
//     tickets 9–11 min, at a random point of the window.
//   - Shared: a Backend (memcache, Redis, SQL, Caddy storage) behind a
//     breaker, with the cluster protocol written once: read, lease, re-read,
//     fetch, newer-wins write, release only if ours; waiters poll and take
//     over a lease whose holder died, and wait no longer than an honest
//     lease lives (FetchTimeout + 2 s) whatever the store holds; daily
//     counters as sealed per-instance slots that are summed; a
//     once-a-minute peek that adopts a peer's newer token. A lock a peer
//     holds (Caddy storage) is ErrBusy, contention, never a breaker
//     failure.
//   - Sealer: every stored value is AES-256-GCM under a key derived by
//     HKDF-SHA256 from the secret and appid, with the storage key as
//     additional data; key names are an HMAC under another derived key.
//     Whoever reads or writes the store can neither read a token nor plant
//     one, and an authentic value that claims more than WeChat grants is
//     still refused. Leases and one-time marks carry their own sealed
//     expiry, counters are sealed counts: a value the account's gateways
//     did not write is worth no more than an absent one, and the worst a
//     store writer can do is make the gateway behave as if it had no store.
//
// # New sources
//
// A Source gets FetchOptions.Aux, a small sealed key-value space beside
// its credential in the store (memory without one). The component token
// reads its pushed component_verify_ticket there; the authorizer token
// reads its refresh token and writes the rotated one back before
// returning the access token, so a rotation is never lost. Tickets and
// those tokens get the same Cache: backoff, refresh-ahead, cluster
// protocol, ceiling.
//
// # The open platform
//
// ComponentTokenSource and AuthorizerTokenSource are Sources like the
// others. A Registry holds one Cache per authorizer, created on first
// use: a lock-free, allocation-free lookup (copy-on-write shards), no
// per-minute store peek (PeekInterval < 0), renewals on the shared
// Scheduler with the first one spread over the token's life (Spread), so
// ten thousand authorizers cost about 1.2 KB each and no goroutine. A
// forgotten authorizer (61003, unauthorized) keeps an empty refresh
// token in the Aux, which has no delete.
//
// # One caller never takes the account down
//
// A token errcode on one API call is evidence about that call, not proof
// about the token: some calls answer 40001 whatever the token (a
// caller-supplied credential is wrong), and WeChat has had glitches that
// reject every token for a moment. The request path therefore calls
// Cache.Rejected(ctx, T) and replays only if it says so:
//
//   - T is no longer current: replay with the current token, no fetch.
//   - T was fetched to replace a rejected token, has not answered a call
//     since (Confirm), and is younger than MinAge (60 s): keep it. A fresh
//     token failing at once means WeChat is rejecting every token (a
//     glitch); this bounds what one costs in classic tokens. Any other
//     token is probed however young, so a real revocation (a secret
//     reset, another system's force_refresh) is repaired on the first
//     request that meets it.
//   - Otherwise probe T (Prober; get_api_domain_ip for access tokens),
//     single-flighted per token, the verdict kept 30 s. Valid: WeChat's
//     answer was not about our token; no invalidate, no fetch, no replay.
//     Probe error: unknown; keep T. Invalid: compare-and-invalidate,
//     fetch, replay if the new token differs.
//   - A token the endpoint hands back is accepted, never refused: stable
//     returning T again means WeChat vouches for it. force_refresh is used
//     only on repeated evidence (two failed probes of T at least 30 s
//     apart and stable still returns T), within 30 s spacing and 20 a day.
//   - A hard daily ceiling of fetches per account (default 200, counted
//     cluster-wide through the store) ends in ErrFetchCeiling, logged once
//     a day and reported to the Observer and the Status.
//
// # Secrets
//
// No error of this package holds a secret or a token: sources redact
// URLs and answers. An APIError keeps WeChat's "rid: …" for logs, and
// ClientText drops it, since rid/get on a token fetch's rid returns the
// secret. Recent lists the last few token values so the request path can
// scrub them from answers.
package credential
