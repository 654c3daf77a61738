package wxcrypto

import (
	"bytes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// Known answers from WeChat's official WXBizMsgCrypt samples (the Java
// sample's WXBizMsgCryptTest and the Python sample's decrypt case).
const (
	sampleKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

	javaToken  = "pamtest"
	javaAppID  = "wxb11529c136998cb6"
	javaRandom = "aaaabbbbccccdddd"
	javaMsg    = "我是中文abcd123"
	javaEnc    = "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
	javaMsg2   = "<xml><ToUserName><![CDATA[oia2Tj我是中文jewbmiOUlr6X-1crbLOvLw]]></ToUserName><FromUserName><![CDATA[gh_7f083739789a]]></FromUserName><CreateTime>1407743423</CreateTime><MsgType><![CDATA[video]]></MsgType><Video><MediaId><![CDATA[eYJ1MbwPRJtOvIEabaxHs7TX2D-HV71s79GUxqdUkjm6Gs2Ed1KF3ulAOA9H1xG0]]></MediaId><Title><![CDATA[testCallBackReplyVideo]]></Title><Description><![CDATA[testCallBackReplyVideo]]></Description></Video></xml>"
	javaEnc2   = "jn1L23DB+6ELqJ+6bruv23M2GmYfkv0xBh2h+XTBOKVKcgDFHle6gqcZ1cZrk3e1qjPQ1F4RsLWzQRG9udbKWesxlkupqcEcW7ZQweImX9+wLMa0GaUzpkycA8+IamDBxn5loLgZpnS7fVAbExOkK5DYHBmv5tptA9tklE/fTIILHR8HLXa5nQvFb3tYPKAlHF3rtTeayNf0QuM+UW/wM9enGIDIJHF7CLHiDNAYxr+r+OrJCmPQyTy8cVWlu9iSvOHPT/77bZqJucQHQ04sq7KZI27OcqpQNSto2OdHCoTccjggX5Z9Mma0nMJBU+jLKJ38YB1fBIz+vBzsYjrTmFQ44YfeEuZ+xRTQwr92vhA9OxchWVINGC50qE/6lmkwWTwGX9wtQpsJKhP+oS7rvTY8+VdzETdfakjkwQ5/Xka042OlUb1/slTwo4RscuQ+RdxSGvDahxAJ6+EAjLt9d8igHngxIbf6YyqqROxuxqIeIch3CssH/LqRs+iAcILvApYZckqmA7FNERspKA5f8GoJ9sv8xmGvZ9Yrf57cExWtnX8aCMMaBropU/1k+hKP5LVdzbWCG0hGwx/dQudYR/eXp3P0XxjlFiy+9DMlaFExWUZQDajPkdPrEeOwofJb"

	pyToken = "spamtest"
	pyAppID = "wx2c2769f8efd9abc2"
	pyTS    = "1409735669"
	pyNonce = "1320562132"
	pySig   = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
	pyEnc   = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE="
)

func mustNew(t testing.TB, token, appid string) *Crypter {
	t.Helper()
	c, err := New(token, sampleKey, appid)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestKnownAnswers(t *testing.T) {
	c := mustNew(t, javaToken, javaAppID)
	var r [16]byte
	copy(r[:], javaRandom)
	for i, v := range []struct{ msg, enc string }{{javaMsg, javaEnc}, {javaMsg2, javaEnc2}} {
		if got := c.encryptWith(r, []byte(v.msg)); got != v.enc {
			t.Errorf("java sample %d: encrypt = %s", i, got)
		}
		got, err := c.Decrypt(v.enc)
		if err != nil || string(got) != v.msg {
			t.Errorf("java sample %d: decrypt = %q, %v", i, got, err)
		}
	}

	p := mustNew(t, pyToken, pyAppID)
	if got := p.Signature(pyTS, pyNonce, pyEnc); got != pySig {
		t.Fatalf("python sample signature %s, want %s", got, pySig)
	}
	body := BuildEnvelope("", pyEnc)
	msg, err := p.Open(pySig, pyTS, pyNonce, body)
	if err != nil || !bytes.HasPrefix(msg, []byte("<xml>")) || !bytes.Contains(msg, []byte("</xml>")) {
		t.Fatalf("python sample: %q, %v", msg, err)
	}
	if _, err := mustNew(t, pyToken, "wxOTHER").Decrypt(pyEnc); !errors.Is(err, ErrAppID) {
		t.Fatalf("python sample with another appid: %v", err)
	}
}

func TestNewKey(t *testing.T) {
	for _, k := range []string{"", sampleKey[:42], sampleKey + "H", "abcdefghijklmnopqrstuvwxyz0123456789ABCDE!G"} {
		if _, err := New("t", k, "a"); !errors.Is(err, ErrKey) {
			t.Errorf("key %q: %v, want ErrKey", k, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	c := mustNew(t, "tok", "wxCOMPONENT")
	for n := range 70 {
		msg := bytes.Repeat([]byte{'x'}, n)
		enc := c.Encrypt(msg)
		ct, _ := base64.StdEncoding.DecodeString(enc)
		if len(ct)%32 != 0 {
			t.Fatalf("len %d: ciphertext %d bytes, not padded to 32", n, len(ct))
		}
		got, err := c.Decrypt(enc)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("len %d: %q, %v", n, got, err)
		}
	}
	if e1, e2 := c.Encrypt([]byte("a")), c.Encrypt([]byte("a")); e1 == e2 {
		t.Fatal("two encryptions are equal: the random prefix is missing")
	}
	xmlMsg := []byte("<xml><InfoType>component_verify_ticket</InfoType></xml>")
	body, sig := c.Seal(xmlMsg, "1700000000", "n1")
	env, err := ParseEnvelope(body)
	if err != nil || env.AppID != "wxCOMPONENT" {
		t.Fatalf("envelope %s: %+v %v", body, env, err)
	}
	if got, err := c.Open(sig, "1700000000", "n1", body); err != nil || !bytes.Equal(got, xmlMsg) {
		t.Fatalf("Open: %q, %v", got, err)
	}
	if got, err := c.Open(strings.ToUpper(sig), "1700000000", "n1", body); err != nil || !bytes.Equal(got, xmlMsg) {
		t.Fatalf("Open with an upper-case signature: %q, %v", got, err)
	}
}

// raw encrypts plaintext p (already padded or not) under c's key, for
// building malformed messages.
func raw(c *Crypter, p []byte) string {
	out := bytes.Clone(p)
	cipher.NewCBCEncrypter(c.block, c.key[:16]).CryptBlocks(out, out)
	return base64.StdEncoding.EncodeToString(out)
}

func plain(msgLen uint32, msg, appid string, pad int) []byte {
	p := make([]byte, 16, 64)
	p = binary.BigEndian.AppendUint32(p, msgLen)
	p = append(p, msg...)
	p = append(p, appid...)
	for range pad {
		p = append(p, byte(pad))
	}
	return p
}

func TestTamper(t *testing.T) {
	c := mustNew(t, "tok", "wxA")
	secret := "<xml>SECRET-PLAINTEXT</xml>"
	good := plain(uint32(len(secret)), secret, "wxA", 0)
	padTo := func(p []byte, n int) []byte { return append(bytes.Clone(p), bytes.Repeat([]byte{byte(n)}, n)...) }
	pad := 32 - len(good)%32
	cases := []struct {
		name string
		enc  string
		want error
	}{
		{"not base64", "!!!", ErrBase64},
		{"unpadded base64", strings.TrimRight(c.Encrypt([]byte(secret)), "="), ErrBase64},
		{"empty", "", ErrTooShort},
		{"one block", base64.StdEncoding.EncodeToString(make([]byte, 16)), ErrTooShort},
		{"not whole blocks", base64.StdEncoding.EncodeToString(make([]byte, 40)), ErrTooShort},
		{"whole AES blocks, not whole 32-byte units", base64.StdEncoding.EncodeToString(make([]byte, 48)), ErrTooShort},
		{"pad byte 0", raw(c, append(good[:len(good):len(good)], bytes.Repeat([]byte{0}, pad)...)), ErrPadding},
		{"pad byte 33", raw(c, append(plain(uint32(len(secret)), secret, "wxA", 0), bytes.Repeat([]byte{33}, pad)...)), ErrPadding},
		{"uneven pad bytes", func() string {
			p := padTo(good, pad)
			p[len(p)-2] ^= 1
			return raw(c, p)
		}(), ErrPadding},
		{"length past the end", raw(c, padTo(plain(1000, secret, "wxA", 0), pad)), ErrLength},
		{"negative length", raw(c, padTo(plain(0xFFFFFFF0, secret, "wxA", 0), pad)), ErrLength},
		{"wrong appid", raw(c, padTo(plain(uint32(len(secret)), secret, "wxB", 0), pad)), ErrAppID},
		{"appid cut", raw(c, padTo(plain(uint32(len(secret)), secret, "wx", 0), pad+1)), ErrAppID},
		{"padding eats the header", raw(c, bytes.Repeat([]byte{20}, 32)), ErrTooShort},
	}
	for _, tc := range cases {
		got, err := c.Decrypt(tc.enc)
		if !errors.Is(err, tc.want) || got != nil {
			t.Errorf("%s: %q, %v; want %v", tc.name, got, err, tc.want)
			continue
		}
		if !IsCryptoError(err) || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%s: error %q", tc.name, err)
		}
	}

	// A flipped ciphertext bit is caught by the signature before decrypting.
	body, sig := c.Seal([]byte(secret), "1", "n")
	env, _ := ParseEnvelope(body)
	ct, _ := base64.StdEncoding.DecodeString(env.Encrypt)
	ct[len(ct)-20] ^= 0x80
	forged := BuildEnvelope("wxA", base64.StdEncoding.EncodeToString(ct))
	if _, err := c.Open(sig, "1", "n", forged); !errors.Is(err, ErrSignature) {
		t.Fatalf("flipped bit: %v", err)
	}
	for _, bad := range [][3]string{{sig, "2", "n"}, {sig, "1", "m"}, {"", "1", "n"}, {sig[:39], "1", "n"}} {
		if _, err := c.Open(bad[0], bad[1], bad[2], body); !errors.Is(err, ErrSignature) {
			t.Errorf("signature %v: %v", bad, err)
		}
	}
	if _, err := mustNew(t, "other", "wxA").Open(sig, "1", "n", body); !errors.Is(err, ErrSignature) {
		t.Fatalf("other token: %v", err)
	}
	for _, b := range []string{"", "<xml></xml>", "<xml><Encrypt></Encrypt></xml>", "not xml"} {
		if _, err := c.Open(sig, "1", "n", []byte(b)); !errors.Is(err, ErrEnvelope) {
			t.Errorf("body %q: %v", b, err)
		}
	}
}

func TestEnvelopeCDATA(t *testing.T) {
	env, err := ParseEnvelope(BuildEnvelope("a]]>b", "x"))
	if err != nil || env.AppID != "a]]>b" || env.Encrypt != "x" {
		t.Fatalf("%+v %v", env, err)
	}
}

func FuzzDecrypt(f *testing.F) {
	c := mustNew(f, javaToken, javaAppID)
	f.Add(javaEnc)
	f.Add(javaEnc2)
	f.Add(c.Encrypt([]byte("<xml/>")))
	f.Add(c.Encrypt(nil))
	f.Add("")
	f.Add("AAAA")
	f.Add(base64.StdEncoding.EncodeToString(make([]byte, 32)))
	f.Add(pyEnc)
	f.Fuzz(func(t *testing.T, enc string) {
		msg, err := c.Decrypt(enc)
		if err != nil {
			if msg != nil || !IsCryptoError(err) {
				t.Fatalf("error %v with %d bytes", err, len(msg))
			}
			return
		}
		// Whatever decrypts must survive a round trip.
		again, err := c.Decrypt(c.Encrypt(msg))
		if err != nil || !bytes.Equal(again, msg) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
