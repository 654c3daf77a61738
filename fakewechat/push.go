package fakewechat

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddy-wechat/wechat/internal/wxcrypto"
)

// The push side of the fake (消息推送, docs/message-push-rules.md): it
// signs and encrypts messages as WeChat does, POSTs them to an account's
// server URL with WeChat's 5 s timeout and three tries, and checks the
// reply's signature before decrypting it.

// PushAccount is an account's server configuration (服务器配置) as WeChat
// holds it.
type PushAccount struct {
	Kind           string // official_account (default), mini_program, wecom
	Token          string
	EncodingAESKey string // "" in plain mode
	// AppID is the receiver id: appid, or WeCom's corpid or suite id.
	AppID      string
	Mode       string // safe (default with a key), compatible, plain
	JSON       bool   // a mini program's JSON data format
	OriginalID string // gh_…, the envelope's ToUserName
	AgentID    string // WeCom
}

// Pusher delivers messages for one account.
type Pusher struct {
	Account PushAccount
	// Timeout of one try (WeChat: 5 s) and number of tries (3).
	Timeout time.Duration
	Tries   int
	// Client sends the tries; nil: a client of its own.
	Client *http.Client
	Now    func() time.Time

	once    sync.Once
	initErr error
	crypter *wxcrypto.Crypter
}

// Attempt is one try.
type Attempt struct {
	URL      string
	Status   int
	Err      error  // timeout, connection, or a reply that does not verify
	Reply    []byte // the reply, decrypted
	Duration time.Duration
}

// init fills the defaults once; a Pusher is then safe for concurrent use.
func (p *Pusher) init() error {
	p.once.Do(func() { p.initErr = p.setup() })
	return p.initErr
}

func (p *Pusher) setup() error {
	if p.Timeout <= 0 {
		p.Timeout = 5 * time.Second
	}
	if p.Tries <= 0 {
		p.Tries = 3
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Client == nil {
		p.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	}
	if p.encrypted() {
		c, err := wxcrypto.New(p.Account.Token, p.Account.EncodingAESKey, p.Account.AppID)
		if err != nil {
			return err
		}
		p.crypter = c
	}
	return nil
}

func (p *Pusher) encrypted() bool { return p.Account.Mode != "plain" && p.Account.EncodingAESKey != "" }

func (p *Pusher) wecom() bool { return p.Account.Kind == "wecom" }

// Sign is WeChat's signature: sha1 of the parts, sorted and joined.
func Sign(parts ...string) string {
	sort.Strings(parts)
	s := sha1.Sum([]byte(strings.Join(parts, "")))
	return hex.EncodeToString(s[:])
}

func pushNonce() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return strconv.FormatUint(uint64(b[0])<<24|uint64(b[1])<<16|uint64(b[2])<<8|uint64(b[3]), 10)
}

// URLCheckRequest is the GET WeChat sends when the server URL is saved,
// and the echostr it expects back.
func (p *Pusher) URLCheckRequest(target string) (*http.Request, string, error) {
	if err := p.init(); err != nil {
		return nil, "", err
	}
	ts := strconv.FormatInt(p.Now().Unix(), 10)
	nonce := pushNonce()
	want := strconv.FormatUint(uint64(p.Now().UnixNano())%1e18, 10)
	q := url.Values{"timestamp": {ts}, "nonce": {nonce}}
	if p.wecom() {
		enc := p.crypter.Encrypt([]byte(want))
		q.Set("echostr", enc)
		q.Set("msg_signature", Sign(p.Account.Token, ts, nonce, enc))
	} else {
		q.Set("echostr", want)
		q.Set("signature", Sign(p.Account.Token, ts, nonce))
	}
	r, err := http.NewRequest(http.MethodGet, target+"?"+q.Encode(), nil)
	return r, want, err
}

// URLCheck performs the URL check and reports whether the answer is the
// echostr (WeCom: decrypted), exactly.
func (p *Pusher) URLCheck(ctx context.Context, target string) error {
	r, want, err := p.URLCheckRequest(target)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	resp, err := p.Client.Do(r.WithContext(ctx))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != 200 || string(b) != want {
		return fmt.Errorf("URL check: %d %q, want 200 %q", resp.StatusCode, b, want)
	}
	return nil
}

// Request builds one try of msg (the plaintext message, XML or JSON) as
// WeChat signs and encrypts it, stamped now.
func (p *Pusher) Request(target string, msg []byte) (*http.Request, error) {
	if err := p.init(); err != nil {
		return nil, err
	}
	ts := strconv.FormatInt(p.Now().Unix(), 10)
	nonce := pushNonce()
	q := url.Values{"timestamp": {ts}, "nonce": {nonce}}
	if !p.wecom() {
		q.Set("signature", Sign(p.Account.Token, ts, nonce))
		if from := fieldOf(msg, "FromUserName", p.Account.JSON); from != "" {
			q.Set("openid", from)
		}
	}
	body := msg
	if p.encrypted() {
		enc := p.crypter.Encrypt(msg)
		q.Set("encrypt_type", "aes")
		q.Set("msg_signature", Sign(p.Account.Token, ts, nonce, enc))
		to := p.Account.OriginalID
		if p.wecom() {
			to = p.Account.AppID
		}
		switch {
		case p.Account.JSON:
			body, _ = json.Marshal(map[string]string{"ToUserName": to, "Encrypt": enc})
		default:
			var b bytes.Buffer
			b.WriteString("<xml><ToUserName><![CDATA[" + to + "]]></ToUserName>")
			if p.wecom() && p.Account.AgentID != "" {
				b.WriteString("<AgentID><![CDATA[" + p.Account.AgentID + "]]></AgentID>")
			}
			if p.Account.Mode == "compatible" {
				// Compatible mode sends the plaintext fields as well.
				inner := bytes.TrimSuffix(bytes.TrimPrefix(bytes.TrimSpace(msg), []byte("<xml>")), []byte("</xml>"))
				inner = bytes.Replace(inner, []byte("<ToUserName><![CDATA["+to+"]]></ToUserName>"), nil, 1)
				b.Write(inner)
			}
			b.WriteString("<Encrypt><![CDATA[" + enc + "]]></Encrypt></xml>")
			body = b.Bytes()
		}
	}
	r, err := http.NewRequest(http.MethodPost, target+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if p.Account.JSON {
		r.Header.Set("Content-Type", "application/json")
	} else {
		r.Header.Set("Content-Type", "text/xml")
	}
	r.Header.Set("User-Agent", "Mozilla/4.0")
	return r, nil
}

// fieldOf reads a top-level field of a plaintext message.
func fieldOf(msg []byte, name string, isJSON bool) string {
	if isJSON {
		var m map[string]any
		if json.Unmarshal(msg, &m) != nil {
			return ""
		}
		s, _ := m[name].(string)
		return s
	}
	d := xml.NewDecoder(bytes.NewReader(msg))
	depth := 0
	in := false
	for {
		t, err := d.Token()
		if err != nil {
			return ""
		}
		switch t := t.(type) {
		case xml.StartElement:
			depth++
			in = depth == 2 && t.Name.Local == name
		case xml.EndElement:
			depth--
			in = false
		case xml.CharData:
			if in {
				return strings.TrimSpace(string(t))
			}
		}
	}
}

// Push delivers msg as WeChat does: a try, and on a timeout, a failure
// or a non-200 answer another, up to Tries; try i goes to
// targets[i%len(targets)] (one URL for a single instance; several to
// spread the tries over a cluster). It returns every try and the reply
// of the one that succeeded; a reply that does not verify is an error.
func (p *Pusher) Push(ctx context.Context, targets []string, msg []byte) ([]Attempt, []byte, error) {
	if err := p.init(); err != nil {
		return nil, nil, err
	}
	var tries []Attempt
	for i := range p.Tries {
		a := p.try(ctx, targets[i%len(targets)], msg)
		tries = append(tries, a)
		if a.Err == nil && a.Status == 200 {
			return tries, a.Reply, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return tries, nil, errors.New("fakewechat: no try got a valid answer")
}

func (p *Pusher) try(ctx context.Context, target string, msg []byte) Attempt {
	a := Attempt{URL: target}
	start := time.Now()
	defer func() { a.Duration = time.Since(start) }()
	r, err := p.Request(target, msg)
	if err != nil {
		a.Err = err
		return a
	}
	tctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	resp, err := p.Client.Do(r.WithContext(tctx))
	if err != nil {
		a.Err = err
		a.Duration = time.Since(start)
		return a
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	a.Status = resp.StatusCode
	if err != nil {
		a.Err = err
		return a
	}
	if a.Status != 200 {
		a.Reply = b
		return a
	}
	a.Reply, a.Err = p.OpenReply(b)
	a.Duration = time.Since(start)
	return a
}

// OpenReply checks a reply as WeChat would: success or empty as is; in
// safe mode an Encrypt/MsgSignature/TimeStamp/Nonce envelope whose
// signature verifies and whose Encrypt decrypts for this account; in
// plain mode the reply itself.
func (p *Pusher) OpenReply(b []byte) ([]byte, error) {
	if err := p.init(); err != nil {
		return nil, err
	}
	t := bytes.TrimSpace(b)
	if len(t) == 0 || string(t) == "success" || !p.encrypted() {
		return b, nil
	}
	var env struct {
		Encrypt      string `xml:"Encrypt" json:"Encrypt"`
		MsgSignature string `xml:"MsgSignature" json:"MsgSignature"`
		TimeStamp    string `xml:"TimeStamp" json:"-"`
		Nonce        string `xml:"Nonce" json:"Nonce"`
	}
	if p.Account.JSON {
		var j struct {
			TimeStamp json.Number `json:"TimeStamp"`
		}
		if err := json.Unmarshal(t, &env); err != nil {
			return nil, fmt.Errorf("reply is not a JSON envelope: %v", err)
		}
		if err := json.Unmarshal(t, &j); err != nil {
			return nil, err
		}
		env.TimeStamp = j.TimeStamp.String()
	} else if err := xml.Unmarshal(t, &env); err != nil {
		return nil, fmt.Errorf("reply is not an XML envelope: %v", err)
	}
	if env.Encrypt == "" || env.TimeStamp == "" || env.Nonce == "" {
		return nil, errors.New("reply lacks Encrypt, TimeStamp or Nonce (a plaintext reply in safe mode?)")
	}
	want := Sign(p.Account.Token, env.TimeStamp, env.Nonce, env.Encrypt)
	if subtle.ConstantTimeCompare([]byte(want), []byte(env.MsgSignature)) != 1 {
		return nil, errors.New("reply MsgSignature does not verify")
	}
	return p.crypter.Decrypt(env.Encrypt)
}

// TextMessage is a user's text message to an official account.
func TextMessage(to, from, content string, msgID int64, at time.Time) []byte {
	return fmt.Appendf(nil, "<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[%s]]></Content><MsgId>%d</MsgId></xml>",
		to, from, at.Unix(), content, msgID)
}

// EventMessage is an event push (subscribe, CLICK, ...).
func EventMessage(to, from, event string, at time.Time) []byte {
	return fmt.Appendf(nil, "<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[%s]]></FromUserName><CreateTime>%d</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[%s]]></Event></xml>",
		to, from, at.Unix(), event)
}
