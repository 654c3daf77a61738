package credential

import "go.uber.org/zap"

// The log contract: one structured line per credential event, with the
// event's name under FieldEvent and the fields below, so that operators
// can ship and grep them (README, "Logs"). Names and keys are promises:
// add new ones, never rename. No field ever holds a token, ticket,
// refresh token or secret.
const (
	EventFetch                 = "fetch"                   // a credential fetched from WeChat
	EventFetchFailed           = "fetch_failed"            // a fetch failed; the cache backs off
	EventRenewal               = "renewal"                 // refresh-ahead replaced a credential before expiry (fetched or a peer's)
	EventRejection             = "rejection"               // a credential dropped on a request's evidence, after a probe said invalid
	EventProbe                 = "probe"                   // a rejected credential was probed: verdict valid, invalid or error
	EventVouched               = "vouched"                 // the endpoint handed back the rejected credential: kept
	EventForceRefreshFailed    = "force_refresh_failed"    // a force_refresh failed; the vouched credential is kept
	EventCeiling               = "ceiling"                 // the daily fetch ceiling reached
	EventQuotaWarning          = "quota_warning"           // fetches used quota_warn of WeChat's daily quota
	EventStoreBreaker          = "store_breaker"           // the store's breaker opened or closed (state)
	EventStoreUnusable         = "store_value_unusable"    // a stored credential could not be opened (foreign, corrupt)
	EventAuthorizerRevoked     = "authorizer_revoked"      // 61003: the merchant revoked the platform; forgotten
	EventRefreshTokenLost      = "refresh_token_lost"      // 61023 and no other refresh token: the merchant must authorize again
	EventRefreshTokenRecovered = "refresh_token_recovered" // 61023 recovered through api_get_authorizer_info
	EventRefreshTokenUnsaved   = "refresh_token_unsaved"   // the store refused a rotated refresh token; kept in memory
)

// Field keys of the log contract.
const (
	FieldEvent        = "event"
	FieldAppID        = "appid"         // the account's (or authorizer's, or component's) appid
	FieldAccount      = "account"       // the account label of the metrics and status view
	FieldComponent    = "component"     // the open-platform component appid
	FieldAuthorizer   = "authorizer"    // an authorizer appid
	FieldCredential   = "credential"    // access_token, ticket:jsapi, component_access_token, authorizer:<appid>
	FieldSource       = "source"        // fetch (from WeChat) or store (a peer's)
	FieldExpiresIn    = "expires_in"    // seconds, as WeChat gave them
	FieldForceRefresh = "force_refresh" // the fetch was a force_refresh
	FieldErrcode      = "errcode"       // WeChat's errcode
	FieldError        = "error"         // the error in words, credentials redacted
	FieldRetryIn      = "retry_in"      // the backoff or cool-off
	FieldVerdict      = "verdict"       // valid, invalid, error
	FieldCeiling      = "ceiling"       // the daily fetch ceiling
	FieldState        = "state"         // open, closed
	FieldOp           = "op"            // the store operation
	FieldKey          = "key"           // a store key (a keyed hash and a slot name, no value)
	FieldReason       = "reason"
	FieldTokenAPI     = "token_api"
	FieldUsed         = "used"
	FieldQuota        = "quota"
	FieldDay          = "day" // Beijing day, 2006-01-02
)

// Probe verdicts and breaker states.
const (
	VerdictValid   = "valid"
	VerdictInvalid = "invalid"
	VerdictError   = "error"
	StateOpen      = "open"
	StateClosed    = "closed"
)

// Event is the field that names an event.
func Event(name string) zap.Field { return zap.String(FieldEvent, name) }

func verdictName(valid bool) string {
	if valid {
		return VerdictValid
	}
	return VerdictInvalid
}
