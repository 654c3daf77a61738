// Package wxcrypto is WeChat's message crypto (消息加解密), as used by the
// open platform's callback (授权事件接收URL) and by encrypted message
// pushes: AES-256-CBC over "16 random bytes | 4-byte length | XML |
// appid", PKCS#7-padded to 32, base64-encoded, signed with sha1.
//
// It is shared by the fake WeChat, which encrypts what it pushes, and the
// gateway's callback handler, which must reject anything forged; so every
// check is strict, and no error text ever quotes decrypted bytes.
package wxcrypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"sort"
	"strings"
)

// Error is a crypto failure. Compare with errors.Is against the Err
// values; errors.As(err, new(*Error)) tells a bad message (a 4xx for a
// callback) from anything else.
type Error struct{ what string }

func (e *Error) Error() string { return "wxcrypto: " + e.what }

// The failures, one per check, so a caller can count them apart.
var (
	ErrKey       = &Error{"EncodingAESKey must be 43 base64 characters"}
	ErrSignature = &Error{"msg_signature does not match"}
	ErrBase64    = &Error{"Encrypt is not base64"}
	ErrTooShort  = &Error{"ciphertext too short or not whole blocks"}
	ErrPadding   = &Error{"bad PKCS#7 padding"}
	ErrLength    = &Error{"message length field out of range"}
	ErrAppID     = &Error{"appid does not match"}
	ErrEnvelope  = &Error{"body is not an <xml><Encrypt> envelope"}
)

// blockPad is WeChat's padding unit: 32 bytes, not AES's 16.
const blockPad = 32

// Crypter encrypts and decrypts for one (token, EncodingAESKey, appid).
// It is safe for concurrent use.
type Crypter struct {
	token string
	appid string
	key   []byte // 32 bytes; IV = key[:16]
	block cipher.Block
}

// New checks the 43-character EncodingAESKey and derives the AES key
// (base64(key+"=")) and IV (its first 16 bytes).
func New(token, encodingAESKey, appid string) (*Crypter, error) {
	if len(encodingAESKey) != 43 {
		return nil, ErrKey
	}
	// Not Strict: keys have 2 spare bits, and WeChat's own sample key
	// ("...ABCDEFG") sets them.
	key, err := base64.StdEncoding.DecodeString(encodingAESKey + "=")
	if err != nil || len(key) != 32 {
		return nil, ErrKey
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, ErrKey
	}
	return &Crypter{token: token, appid: appid, key: key, block: block}, nil
}

// AppID returns the appid this Crypter puts in and expects.
func (c *Crypter) AppID() string { return c.appid }

// Encrypt returns the base64 Encrypt text of plainXML with fresh random
// bytes in front.
func (c *Crypter) Encrypt(plainXML []byte) string {
	var r [16]byte
	_, _ = rand.Read(r[:])
	return c.encryptWith(r, plainXML)
}

// encryptWith is Encrypt with given random bytes, for known-answer tests.
func (c *Crypter) encryptWith(random [16]byte, msg []byte) string {
	n := 16 + 4 + len(msg) + len(c.appid)
	pad := blockPad - n%blockPad // 1..32, never 0
	p := make([]byte, 0, n+pad)
	p = append(p, random[:]...)
	p = binary.BigEndian.AppendUint32(p, uint32(len(msg)))
	p = append(p, msg...)
	p = append(p, c.appid...)
	p = append(p, bytes.Repeat([]byte{byte(pad)}, pad)...)
	cipher.NewCBCEncrypter(c.block, c.key[:16]).CryptBlocks(p, p)
	return base64.StdEncoding.EncodeToString(p)
}

// Decrypt returns the message XML inside encrypt after checking the
// padding, the length field and the appid. Check the signature first
// (Verify or Open): that keeps forged ciphertexts, and any padding
// oracle, away from this code.
func (c *Crypter) Decrypt(encrypt string) ([]byte, error) {
	ct, err := base64.StdEncoding.Strict().DecodeString(encrypt)
	if err != nil {
		return nil, ErrBase64
	}
	// WeChat pads to 32, so a ciphertext of whole AES blocks that is not
	// whole 32-byte units was not made by WeChat (or by this package).
	if len(ct) < blockPad || len(ct)%blockPad != 0 {
		return nil, ErrTooShort
	}
	p := make([]byte, len(ct))
	cipher.NewCBCDecrypter(c.block, c.key[:16]).CryptBlocks(p, ct)
	pad := int(p[len(p)-1])
	if pad < 1 || pad > blockPad || pad > len(p) {
		return nil, ErrPadding
	}
	for _, b := range p[len(p)-pad:] {
		if int(b) != pad {
			return nil, ErrPadding
		}
	}
	p = p[:len(p)-pad]
	if len(p) < 20 {
		return nil, ErrTooShort
	}
	n := binary.BigEndian.Uint32(p[16:20])
	rest := p[20:]
	// Compare as uint64: a length with the top bit set must not turn
	// negative on a 32-bit int.
	if uint64(n) > uint64(len(rest)) {
		return nil, ErrLength
	}
	msg, appid := rest[:n], rest[n:]
	if subtle.ConstantTimeCompare(appid, []byte(c.appid)) != 1 {
		return nil, ErrAppID
	}
	return bytes.Clone(msg), nil
}

// Signature is msg_signature: sha1 of token, timestamp, nonce and encrypt,
// sorted and concatenated.
func (c *Crypter) Signature(timestamp, nonce, encrypt string) string {
	return Signature(c.token, timestamp, nonce, encrypt)
}

// Signature computes msg_signature for token; with encrypt "" it is the
// plain-mode signature of a URL check.
func Signature(token, timestamp, nonce, encrypt string) string {
	parts := []string{token, timestamp, nonce}
	if encrypt != "" {
		parts = append(parts, encrypt)
	}
	sort.Strings(parts)
	sum := sha1.Sum([]byte(strings.Join(parts, "")))
	return hex.EncodeToString(sum[:])
}

// Verify checks msgSignature in constant time, so timing tells a forger
// nothing about how close a guess came.
func (c *Crypter) Verify(msgSignature, timestamp, nonce, encrypt string) bool {
	want := c.Signature(timestamp, nonce, encrypt)
	return subtle.ConstantTimeCompare([]byte(strings.ToLower(msgSignature)), []byte(want)) == 1
}

// Envelope is the POST body of an encrypted push: <xml><AppId> (open
// platform events) or <ToUserName> (message pushes), and <Encrypt>.
type Envelope struct {
	XMLName    xml.Name `xml:"xml"`
	AppID      string   `xml:"AppId,omitempty"`
	ToUserName string   `xml:"ToUserName,omitempty"`
	Encrypt    string   `xml:"Encrypt"`
}

// ParseEnvelope reads an envelope; an empty Encrypt is an error.
func ParseEnvelope(body []byte) (Envelope, error) {
	var env Envelope
	if err := xml.Unmarshal(body, &env); err != nil || env.Encrypt == "" {
		return Envelope{}, ErrEnvelope
	}
	return env, nil
}

// BuildEnvelope returns <xml><AppId>appid</AppId><Encrypt>encrypt</Encrypt></xml>,
// the body WeChat POSTs to the 授权事件接收URL.
func BuildEnvelope(appid, encrypt string) []byte {
	var b bytes.Buffer
	b.WriteString("<xml><AppId><![CDATA[")
	b.WriteString(cdata(appid))
	b.WriteString("]]></AppId><Encrypt><![CDATA[")
	b.WriteString(cdata(encrypt))
	b.WriteString("]]></Encrypt></xml>")
	return b.Bytes()
}

// cdata keeps "]]>" from ending a CDATA section early.
func cdata(s string) string { return strings.ReplaceAll(s, "]]>", "]]]]><![CDATA[>") }

// Seal encrypts plainXML and returns the envelope body and its
// msg_signature for timestamp and nonce: what WeChat sends.
func (c *Crypter) Seal(plainXML []byte, timestamp, nonce string) (body []byte, msgSignature string) {
	enc := c.Encrypt(plainXML)
	return BuildEnvelope(c.appid, enc), c.Signature(timestamp, nonce, enc)
}

// Open checks the signature of an envelope body, then decrypts it: what
// a callback handler does with WeChat's POST.
func (c *Crypter) Open(msgSignature, timestamp, nonce string, body []byte) ([]byte, error) {
	env, err := ParseEnvelope(body)
	if err != nil {
		return nil, err
	}
	if !c.Verify(msgSignature, timestamp, nonce, env.Encrypt) {
		return nil, ErrSignature
	}
	return c.Decrypt(env.Encrypt)
}

// IsCryptoError reports whether err is one of this package's failures.
func IsCryptoError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
