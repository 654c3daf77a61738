package push

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzMessagePush feeds arbitrary bodies to the parse and decrypt of a
// push, correctly signed, so every body reaches the decryption and the
// message parser: none may panic, and none may pass unless it decrypts
// to a message for this account.
func FuzzMessagePush(f *testing.F) {
	fx := newFixture(f, nil)
	now := fx.now.Unix()
	for _, s := range []string{
		"<xml><ToUserName>" + tOrig + "</ToUserName><Encrypt>" + fx.c.Encrypt([]byte(textXML("1", "hi", now))) + "</Encrypt></xml>",
		"<xml><Encrypt>AAAA</Encrypt></xml>",
		`<!DOCTYPE x [<!ENTITY a "b">]><xml>&a;</xml>`,
		`{"ToUserName":"gh","Encrypt":"AAAA"}`,
		"<xml>" + strings.Repeat("<a>", 50),
		"",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	js := newFixture(f, func(c *Config) { c.Kind = MiniProgram; c.Format = JSON })
	ts := strconv.FormatInt(now, 10)
	f.Fuzz(func(t *testing.T, body []byte, asJSON bool) {
		g := fx.g
		if asJSON {
			g = js.g
		}
		fields, _ := ParseXML(body)
		if asJSON {
			fields, _ = ParseJSON(body)
		}
		q := map[string]string{"timestamp": ts, "nonce": "n", "signature": sig(tToken, ts, "n"), "encrypt_type": "aes",
			"msg_signature": sig(tToken, ts, "n", fields.Encrypt)}
		m, err := g.OpenBody(q, body, time.Unix(now, 0))
		if err == nil {
			if m.Fields.ToUserName != tOrig || m.Key == "" {
				t.Fatalf("accepted a message for %q", m.Fields.ToUserName)
			}
			return
		}
		if _, ok := err.(*Reject); !ok {
			t.Fatalf("error %T is not a Reject", err)
		}
		if rj := err.(*Reject); rj.Status < 400 || rj.Status >= 500 {
			t.Fatalf("status %d", rj.Status)
		}
	})
}
