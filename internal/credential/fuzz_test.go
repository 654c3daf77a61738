package credential

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzOpenToken: whatever a store holds, opening it never panics, never
// quotes it in an error, and yields only well-formed, clamped tokens.
// (It replaces the root's FuzzDecodeEntry of the plaintext memcache
// format.)
func FuzzOpenToken(f *testing.F) {
	s, err := NewSealer("fuzz-secret", "wxfuzz")
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	good := s.SealToken("k", NewToken("TOKEN_abc", 7200, now, "fetch"))
	for _, b := range [][]byte{good, good[:len(good)-1], []byte("w1 1 2 t"), []byte(""), []byte("c"), append([]byte("c"), make([]byte, 40)...)} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := s.OpenToken("k", b, now)
		if err != nil {
			if e != nil {
				t.Fatal("token and error both returned")
			}
			if len(b) >= 12 && strings.Contains(err.Error(), string(b)) {
				t.Fatalf("error quotes the stored value: %v", err)
			}
			return
		}
		if e.Value == "" || strings.ContainsAny(e.Value, " \t\r\n\x00\x7f") {
			t.Fatalf("opened token %q", e.Value)
		}
		if !e.ExpiresAt.After(e.FetchedAt) || e.ExpiresAt.Sub(e.FetchedAt) > MaxTTL+lifetimeSlack || e.FetchedAt.After(now.Add(futureSlack)) {
			t.Fatalf("unclamped lifetime: %s .. %s", e.FetchedAt, e.ExpiresAt)
		}
		if e.UseBy().After(e.ExpiresAt) || e.Escaped() != url.QueryEscape(e.Value) {
			t.Fatal("derived fields wrong")
		}
		again, err := s.OpenToken("k", s.SealToken("k", e), now)
		if err != nil || again.Value != e.Value || !again.FetchedAt.Equal(e.FetchedAt) {
			t.Fatalf("round trip changed the token: %v", err)
		}
	})
}
