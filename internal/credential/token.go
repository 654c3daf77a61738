package credential

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Token is one credential as the engine holds it: an access_token, a
// ticket, a component or authorizer token. It is immutable once
// published, so the hot path reads it through an atomic pointer with no
// lock and no allocation.
type Token struct {
	Value     string    // the credential itself: never logged, never in metrics
	FetchedAt time.Time // when WeChat issued it to us (or to a peer)
	ExpiresAt time.Time // FetchedAt + expires_in, clamped
	Source    string    // "fetch" or "store"

	escaped string    // url.QueryEscape(Value), computed once
	useBy   time.Time // after this, requests stop using it and fetch anew
}

// Lifetime rules shared by every credential.
const (
	// SafetyMargin keeps a token from being used in its last moments, so
	// a request that leaves just before expiry does not arrive after it.
	SafetyMargin = 30 * time.Second
	// MaxTTL clamps absurd expires_in values: WeChat documents 7200 s,
	// and trusting a huge value would pin a dead token forever.
	MaxTTL = 7200 * time.Second
	// FallbackTTL is used when expires_in is missing or not positive: the
	// token works now, but there is no promise for how long.
	FallbackTTL = 5 * time.Minute
)

// NewToken builds a token from an expires_in answer. It clamps before
// multiplying, since a huge expires_in would overflow a Duration.
func NewToken(value string, expiresIn int64, fetchedAt time.Time, source string) *Token {
	var ttl time.Duration
	switch {
	case expiresIn <= 0:
		ttl = FallbackTTL
	case expiresIn >= int64(MaxTTL/time.Second):
		ttl = MaxTTL
	default:
		ttl = time.Duration(expiresIn) * time.Second
	}
	return finish(&Token{Value: value, FetchedAt: fetchedAt, ExpiresAt: fetchedAt.Add(ttl), Source: source})
}

func finish(t *Token) *Token {
	t.escaped = url.QueryEscape(t.Value)
	margin := SafetyMargin
	if ttl := t.ExpiresAt.Sub(t.FetchedAt); ttl < 4*margin {
		margin = ttl / 4
	}
	t.useBy = t.ExpiresAt.Add(-margin)
	return t
}

// Escaped is the query-escaped value, computed once so that requests
// do not pay for it.
func (t *Token) Escaped() string { return t.escaped }

// UseBy is when the token stops being handed out.
func (t *Token) UseBy() time.Time { return t.useBy }

// usable reports whether t can be handed out at now.
func (t *Token) usable(now time.Time) bool { return t != nil && now.Before(t.useBy) }

// APIError is an errcode answer from WeChat.
type APIError struct {
	Code     int
	Msg      string // redacted of the secret; may end in "rid: …"
	Endpoint string // what was called, e.g. "token", "getticket"
}

func (e *APIError) Error() string {
	return fmt.Sprintf("WeChat %s endpoint answered errcode %d: %s", e.Endpoint, e.Code, e.Msg)
}

// ClientText is the error for a client, without WeChat's "rid: …" suffix:
// the rid of a token fetch lets rid/get return the fetch's request, and
// with it the secret. Logs keep the full Error().
func (e *APIError) ClientText() string {
	return fmt.Sprintf("WeChat %s endpoint answered errcode %d: %s", e.Endpoint, e.Code, StripRID(e.Msg))
}

// StripRID removes WeChat's "rid: …" suffix (and its separator) from msg.
func StripRID(msg string) string {
	i := strings.LastIndex(msg, "rid:")
	if i < 0 {
		return msg
	}
	return strings.TrimRight(msg[:i], " ,;:")
}

// ClientText gives the text of err that may reach a client: every
// *APIError in it loses its rid. Errors of this package never hold a
// token or a secret.
func ClientText(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		s := err.Error()
		return strings.Replace(s, ae.Error(), ae.ClientText(), 1)
	}
	return err.Error()
}

// IsTokenErrcode reports the errcodes that mean "this token is no good":
// invalid (40001), invalid (40014, WeCom's usual), expired (42001).
func IsTokenErrcode(code int) bool { return code == 40001 || code == 40014 || code == 42001 }

// ErrFetchCeiling is returned once an account has spent its daily fetch
// ceiling: the gateway stops asking WeChat so that the other systems that
// share the account's quota keep theirs.
var ErrFetchCeiling = errors.New("the daily ceiling of credential fetches for this account is reached")

// BackoffError says that fetching is paused after failures; it carries the
// last failure so the client sees WeChat's errcode.
type BackoffError struct {
	Err     error
	RetryIn time.Duration
}

func (e *BackoffError) Error() string {
	return fmt.Sprintf("%v (next attempt in %s)", e.Err, e.RetryIn.Round(time.Second))
}
func (e *BackoffError) Unwrap() error { return e.Err }

// Day is the Beijing date of t, the day WeChat's daily quotas count in
// (they reset at midnight UTC+8).
func Day(t time.Time) string { return t.In(beijing).Format("2006-01-02") }
