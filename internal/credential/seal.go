package credential

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"time"
)

// Sealer authenticates and encrypts values for a store, so that whoever
// can read or write the store can neither read a credential nor plant
// one: AES-256-GCM under a key derived by HKDF-SHA256 from the account's
// secret, with the storage key as additional data so a value cannot be
// moved between keys.
type Sealer struct {
	aead cipher.AEAD
	name []byte // HMAC key for key names
}

// sealFormat is the first byte of a sealed value.
const sealFormat = 'c'

// Limits on what an opened token may claim.
const (
	lifetimeSlack = 60 * time.Second // expires-fetched may exceed MaxTTL by this
	futureSlack   = time.Minute      // fetched may be this far ahead of our clock
)

// NewSealer derives the sealing and naming keys of one account.
func NewSealer(secret, appid string) (*Sealer, error) {
	if secret == "" {
		return nil, errors.New("credential: sealing needs the account's secret")
	}
	enc, err := hkdf.Key(sha256.New, []byte(secret), []byte(appid), "caddy-wechat credential seal v1", 32)
	if err != nil {
		return nil, err
	}
	name, err := hkdf.Key(sha256.New, []byte(secret), []byte(appid), "caddy-wechat credential key name v1", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(enc)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead, name: name}, nil
}

// KeyName names the account in a store: an HMAC under a derived key, so
// the name reveals nothing about the secret and cannot be tested against
// a guess without it.
func (s *Sealer) KeyName() string {
	m := hmac.New(sha256.New, s.name)
	m.Write([]byte("account"))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// Name names one value of the account in a store, e.g. a push the
// replay guard remembers: an HMAC of kind and v under the naming key, so
// the key tells a store reader nothing about v.
func (s *Sealer) Name(kind, v string) string {
	m := hmac.New(sha256.New, s.name)
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write([]byte(v))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// Seal encrypts plain for storage under key.
func (s *Sealer) Seal(key string, plain []byte) []byte {
	out := make([]byte, 1, 1+s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	out[0] = sealFormat
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	out = append(out, nonce...)
	return s.aead.Seal(out, nonce, plain, []byte(key))
}

var errUnsealed = errors.New("not a value sealed by this account under this key")

// Open authenticates and decrypts a value stored under key. A foreign,
// corrupt or moved value is an error that never quotes the value.
func (s *Sealer) Open(key string, v []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(v) < 1+ns+s.aead.Overhead() || v[0] != sealFormat {
		return nil, errUnsealed
	}
	plain, err := s.aead.Open(nil, v[1:1+ns], v[1+ns:], []byte(key))
	if err != nil {
		return nil, errUnsealed
	}
	return plain, nil
}

// SealToken seals t: fetched and expires in Unix ns, then the value.
func (s *Sealer) SealToken(key string, t *Token) []byte {
	p := make([]byte, 16, 16+len(t.Value))
	binary.BigEndian.PutUint64(p, uint64(t.FetchedAt.UnixNano()))
	binary.BigEndian.PutUint64(p[8:], uint64(t.ExpiresAt.UnixNano()))
	return s.Seal(key, append(p, t.Value...))
}

// OpenToken opens a sealed token and clamps what it may claim: a
// lifetime longer than WeChat's, or a fetch time in the future, is
// rejected even when authentic.
func (s *Sealer) OpenToken(key string, v []byte, now time.Time) (*Token, error) {
	p, err := s.Open(key, v)
	if err != nil {
		return nil, err
	}
	if len(p) <= 16 {
		return nil, errors.New("sealed token too short")
	}
	fetched := time.Unix(0, int64(binary.BigEndian.Uint64(p)))
	expires := time.Unix(0, int64(binary.BigEndian.Uint64(p[8:])))
	switch {
	case !expires.After(fetched):
		return nil, errors.New("expiry before fetch time")
	case expires.Sub(fetched) > MaxTTL+lifetimeSlack:
		return nil, errors.New("lifetime longer than WeChat grants")
	case fetched.After(now.Add(futureSlack)):
		return nil, errors.New("fetched in the future")
	}
	val := string(p[16:])
	for i := 0; i < len(val); i++ {
		if val[i] <= ' ' || val[i] == 0x7f {
			return nil, errors.New("value holds spaces or control characters")
		}
	}
	return finish(&Token{Value: val, FetchedAt: fetched, ExpiresAt: expires, Source: "store"}), nil
}
