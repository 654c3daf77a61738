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
// others, and Probers: an authorizer token is probed with
// get_api_domain_ip (it is used exactly like an access_token), the
// component token with api_get_authorizer_list (count 1), the one read
// documented to take the component token alone and answer 40001 for a
// bad one. So an API answering 40001 whatever the token costs neither an
// api_authorizer_token (which rotates the refresh token) nor an
// api_component_token (which has no ceiling). A Registry holds one Cache per authorizer, created on first
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
// reject every token for a moment. And evidence is about the moment it
// was taken, not a licence for what comes after: a token found valid a
// second ago may be revoked now. The request path therefore calls
// Cache.RejectedOn(ctx, T, path), with the API path that answered, and
// replays only if it says so:
//
//   - T is no longer current: replay with the current token, no fetch.
//   - T is held: rejection evidence just brought it (fetched to replace a
//     rejected token, or a rejected token the endpoint handed back), it
//     has answered no call since, and the hold (MinAge, 60 s, after a
//     replacement's fetch; ProbeTTL, 30 s, after a vouch) has not run
//     out: keep it. A fresh token failing at once means WeChat is
//     rejecting every token (a glitch); this bounds what one costs. The
//     request path calls Confirm(T) on every answer that is not a token
//     errcode (one atomic load when nothing is held): the first success
//     ends the hold, so a revocation after a glitch and its recovery is
//     repaired at once. A peer's token that predates the evidence may
//     have died in the same revocation: the store's copy is not adopted
//     for the replay (the cache fetches instead), and a replacement is
//     held only if it was fetched after the evidence.
//   - Otherwise probe T (Prober: get_api_domain_ip for access and
//     authorizer tokens, api_get_authorizer_list for the component
//     token). A "valid" verdict answers only the path that asked for it,
//     for ProbeTTL (30 s): a steady 40001-only caller of one API costs at
//     most 2 probes a minute and no fetch. Any other path's 40001 probes
//     again, single-flighted per token and at most once a second per
//     token: a caller that meets the spacing waits for the next slot
//     (under a second) instead of trusting an older verdict, so a
//     revocation 0.5 s after any evidence is repaired by the first call
//     that meets it (one probe, one fetch). Valid: WeChat's answer was
//     not about our token; no invalidate, no fetch, no replay. Invalid:
//     compare-and-invalidate, fetch, replay if the new token differs.
//   - A probe that fails, or that WeChat answers with an errcode not
//     about the token (-1 busy, 45009/45011 quota, 48001 …), is no
//     verdict: T is kept (the caller gets WeChat's own answer), nothing
//     is recorded, and further probes of T space out, 1 s doubling to
//     30 s, so a busy WeChat is never probed in a loop. A revocation
//     meanwhile waits for the next probe that answers, or the renewal.
//   - A token the endpoint hands back is accepted, never refused: stable
//     returning T again means WeChat vouches for it (and T is held, as
//     above). force_refresh is used only on repeated evidence (two failed
//     probes of T at least 30 s apart and stable still returns T), within
//     30 s spacing and 20 a day.
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
