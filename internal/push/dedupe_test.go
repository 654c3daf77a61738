package push

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memstore"
)

const replyXML = "<xml><ToUserName>u</ToUserName><FromUserName>a</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>once</Content></xml>"

// TestRetryPattern: WeChat's tries of one message while the app is slow
// reach the app once; a retry in flight waits for the first reply, a later
// one gets the stored reply; a fifth delivery, or one after the retry
// span, is a replay.
func TestRetryPattern(t *testing.T) {
	f := newFixture(t, nil)
	f.app.gate = make(chan struct{})
	f.app.reply = func([]byte) string { return replyXML }
	msg := textXML("4001", "slow", f.now.Unix())

	var wg sync.WaitGroup
	replies := make([]*httptest.ResponseRecorder, 2)
	for i := range replies {
		r := f.request(msg, f.now.Unix(), "try"+string(rune('a'+i)))
		wg.Add(1)
		go func() { defer wg.Done(); replies[i] = f.serve(r) }()
		if i == 0 {
			waitFor(t, func() bool { return f.app.calls.Load() == 1 })
		}
	}
	time.Sleep(50 * time.Millisecond) // let the retry start waiting; a late start only makes it a stored reply
	close(f.app.gate)
	wg.Wait()
	for i, w := range replies {
		if w.Code != 200 || f.openReply(w.Body.Bytes()) != replyXML {
			t.Fatalf("delivery %d: %d %s", i, w.Code, w.Body)
		}
	}
	if w := f.serve(f.request(msg, f.now.Unix(), "tryc")); w.Code != 200 || f.openReply(w.Body.Bytes()) != replyXML {
		t.Fatalf("stored reply: %d %s", w.Code, w.Body)
	}
	if f.ev.get(ResultRetryWaited)+f.ev.get(ResultRetryStored) != 2 {
		t.Fatalf("events %v", f.ev.n)
	}
	f.serve(f.request(msg, f.now.Unix(), "tryd")) // the fourth: still allowed
	if w := f.serve(f.request(msg, f.now.Unix(), "trye")); w.Code != 409 {
		t.Fatalf("a fifth delivery: %d", w.Code)
	}
	if n := f.app.calls.Load(); n != 1 {
		t.Fatalf("the app saw the message %d times", n)
	}

	// Another message, replayed after the retry span with a fresh
	// timestamp (a captured push, re-sent inside the timestamp window).
	msg2 := textXML("4002", "x", f.now.Unix())
	f.app.gate = nil
	f.serve(f.request(msg2, f.now.Unix(), "a"))
	f.setNow(f.now.Add(retrySpan + time.Second))
	if w := f.serve(f.request(msg2, f.now.Unix(), "b")); w.Code != 409 {
		t.Fatalf("a replay after the retry span: %d %s", w.Code, w.Body)
	}
	if n := f.app.calls.Load(); n != 2 {
		t.Fatalf("the app saw %d messages, want 2", n)
	}
}

// TestEventKey: events without MsgId are keyed by FromUserName +
// CreateTime + Event.
func TestEventKey(t *testing.T) {
	f := newFixture(t, nil)
	ev := func(event string, ct int64) string {
		return "<xml><ToUserName>" + tOrig + "</ToUserName><FromUserName>" + tUser + "</FromUserName><CreateTime>" +
			itoa(ct) + "</CreateTime><MsgType>event</MsgType><Event>" + event + "</Event></xml>"
	}
	now := f.now.Unix()
	f.serve(f.request(ev("subscribe", now), now, "1"))
	f.serve(f.request(ev("subscribe", now), now, "2")) // retry
	f.serve(f.request(ev("unsubscribe", now), now, "3"))
	f.serve(f.request(ev("subscribe", now-1), now, "4"))
	if n := f.app.calls.Load(); n != 3 {
		t.Fatalf("app saw %d events, want 3", n)
	}
	if f.app.headers.Get(HeaderEvent) != "subscribe" || f.app.headers.Get(HeaderMsgType) != "event" {
		t.Fatalf("headers %v", f.app.headers)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}

// TestSharedStore: two gateways with their own in-process marks and their
// own clients of one store behave as one: the slow message reaches the
// app once, and the retry at the other gateway gets the first one's reply.
func TestSharedStore(t *testing.T) {
	st := memstore.New()
	sp := &spy{Marks: st.Open(), keys: map[string]bool{}}
	a := newFixture(t, func(c *Config) { c.Marks = sp })
	b := newFixture(t, func(c *Config) { c.Marks = st.Open() })
	b.app = a.app // one app behind both
	a.app.gate = make(chan struct{})
	a.app.reply = func([]byte) string { return replyXML }
	msg := textXML("5001", "cluster", a.now.Unix())
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- a.serve(a.request(msg, a.now.Unix(), "1")) }()
	waitFor(t, func() bool { return a.app.calls.Load() == 1 })
	go func() { done <- b.serve(b.request(msg, b.now.Unix(), "2")) }()
	time.Sleep(120 * time.Millisecond)
	close(a.app.gate)
	for range 2 {
		if w := <-done; w.Code != 200 || a.openReply(w.Body.Bytes()) != replyXML {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	if w := b.serve(b.request(msg, b.now.Unix(), "3")); w.Code != 200 || b.openReply(w.Body.Bytes()) != replyXML {
		t.Fatalf("stored reply at b: %d %s", w.Code, w.Body)
	}
	if n := a.app.calls.Load(); n != 1 || a.g.cfg.Local.Len() != 0 || b.g.cfg.Local.Len() != 0 {
		t.Fatalf("app calls %d; local marks %d, %d (want none: the store holds them)", n, a.g.cfg.Local.Len(), b.g.cfg.Local.Len())
	}
	// What the store holds is sealed: no openid, no content, no reply.
	if len(sp.keys) == 0 {
		t.Fatal("nothing went to the store")
	}
	for k := range sp.keys {
		v, _, _ := st.Open().Get(context.Background(), k)
		for _, s := range []string{tUser, "cluster", "once", "5001", tToken} {
			if strings.Contains(k, s) || strings.Contains(string(v), s) {
				t.Fatalf("the store holds %q in clear", s)
			}
		}
	}
}

// spy records the keys written through it.
type spy struct {
	Marks
	mu   sync.Mutex
	keys map[string]bool
}

func (s *spy) Add(ctx context.Context, key string, v []byte, ttl time.Duration) (bool, error) {
	s.mu.Lock()
	s.keys[key] = true
	s.mu.Unlock()
	return s.Marks.Add(ctx, key, v, ttl)
}

// TestForeignValues: values in the store that no gateway wrote (garbage,
// a value sealed by another account) change nothing: the message is
// handled once and its reply is the app's.
func TestForeignValues(t *testing.T) {
	st := memstore.New()
	f := newFixture(t, func(c *Config) { c.Marks = st.Open() })
	other := newFixture(t, func(c *Config) { c.Token = "anothertoken"; c.Marks = st.Open() })
	f.app.reply = func([]byte) string { return replyXML }
	msg := textXML("6001", "x", f.now.Unix())
	m, _, err := f.g.Open(f.request(msg, f.now.Unix(), "n"))
	if err != nil {
		t.Fatal(err)
	}
	key := f.g.shared.key("push", m.Key)
	be := st.Open()
	ctx := context.Background()
	// A pending claim sealed by another account under our key, with a far
	// deadline, and then garbage: neither may block or answer.
	forged := other.g.shared.seal.Seal(key, (&record{state: stateDone, first: f.now.UnixMilli(), n: 1, ctype: ctypeXML, body: []byte("<xml><Content>forged</Content></xml>")}).encode())
	if ok, _ := be.Add(ctx, key, forged, time.Hour); !ok {
		t.Fatal("planting failed")
	}
	w := f.serve(f.request(msg, f.now.Unix(), "n"))
	if w.Code != 200 || f.openReply(w.Body.Bytes()) != replyXML || f.app.calls.Load() != 1 {
		t.Fatalf("with a foreign value: %d %s, app %d", w.Code, w.Body, f.app.calls.Load())
	}
	msg2 := textXML("6002", "x", f.now.Unix())
	m2, _, _ := f.g.Open(f.request(msg2, f.now.Unix(), "n"))
	key2 := f.g.shared.key("push", m2.Key)
	be.Add(ctx, key2, []byte("garbage that is not sealed"), time.Hour)
	if w := f.serve(f.request(msg2, f.now.Unix(), "n2")); w.Code != 200 || f.app.calls.Load() != 2 {
		t.Fatalf("with garbage: %d %s", w.Code, w.Body)
	}
}

// TestStoreDown: with the store unreachable a message still reaches the
// app, de-duplicated in this process, and the failure is counted.
func TestStoreDown(t *testing.T) {
	st := memstore.New()
	f := newFixture(t, func(c *Config) { c.Marks = st.Open(); c.OpTimeout = 20 * time.Millisecond })
	st.Kill()
	msg := textXML("7001", "x", f.now.Unix())
	f.serve(f.request(msg, f.now.Unix(), "1"))
	f.serve(f.request(msg, f.now.Unix(), "2"))
	if f.app.calls.Load() != 1 || f.ev.store == 0 || f.g.cfg.Local.Len() == 0 {
		t.Fatalf("app %d, store errors %d, local marks %d", f.app.calls.Load(), f.ev.store, f.g.cfg.Local.Len())
	}
}

// TestTakeover: a claim whose owner died (no reply by its deadline) is
// taken over by the next delivery.
func TestTakeover(t *testing.T) {
	f := newFixture(t, nil)
	msg := textXML("8001", "x", f.now.Unix())
	m, _, _ := f.g.Open(f.request(msg, f.now.Unix(), "n"))
	d := f.g.local
	key := d.key("push", m.Key)
	if out, _, err := d.begin(context.Background(), key, newOwner(), f.now); out != runApp || err != nil {
		t.Fatal(out, err)
	}
	// The owner died: it never renews its claim, nor finishes.
	f.setNow(f.now.Add(leaseFor + time.Second))
	f.app.reply = func([]byte) string { return replyXML }
	w := f.serve(f.request(msg, f.now.Unix(), "n2"))
	if w.Code != 200 || f.app.calls.Load() != 1 {
		t.Fatalf("%d %s app %d", w.Code, w.Body, f.app.calls.Load())
	}
}

func TestMemMarksBounds(t *testing.T) {
	now := time.Unix(0, 0)
	m := NewMemMarks(4, 1000, func() time.Time { return now })
	ctx := context.Background()
	for i := range 10 {
		if ok, _ := m.Add(ctx, "k"+itoa(int64(i)), []byte("v"), time.Minute); !ok {
			t.Fatal("add failed")
		}
	}
	if m.Len() != 4 {
		t.Fatalf("len %d", m.Len())
	}
	if _, _, err := m.Get(ctx, "k9"); err != nil {
		t.Fatal("newest evicted")
	}
	if _, _, err := m.Get(ctx, "k0"); err != credential.ErrNotFound {
		t.Fatal("oldest kept")
	}
	m.Add(ctx, "big", make([]byte, 900), time.Minute)
	if m.Bytes() > 1000 {
		t.Fatalf("bytes %d over the bound", m.Bytes())
	}
	now = now.Add(2 * time.Minute)
	if _, _, err := m.Get(ctx, "big"); err != credential.ErrNotFound {
		t.Fatal("expired mark still there")
	}
	if ok, _ := m.Add(ctx, "big", []byte("again"), time.Minute); !ok {
		t.Fatal("re-adding an expired key failed")
	}
	_, ver, _ := m.Get(ctx, "big")
	if ok, _ := m.CompareAndSwap(ctx, "big", ver, []byte("new"), time.Minute); !ok {
		t.Fatal("cas failed")
	}
	if ok, _ := m.CompareAndSwap(ctx, "big", ver, []byte("stale"), time.Minute); ok {
		t.Fatal("cas with a stale version succeeded")
	}
}

// TestWaiterClientGone: a retry whose client hangs up stops waiting and
// writes nothing; the first delivery still stores its reply.
func TestWaiterClientGone(t *testing.T) {
	f := newFixture(t, nil)
	f.app.gate = make(chan struct{})
	f.app.reply = func([]byte) string { return replyXML }
	msg := textXML("9001", "x", f.now.Unix())
	first := make(chan struct{})
	go func() { f.serve(f.request(msg, f.now.Unix(), "1")); close(first) }()
	waitFor(t, func() bool { return f.app.calls.Load() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	r := f.request(msg, f.now.Unix(), "2").WithContext(ctx)
	gone := make(chan *httptest.ResponseRecorder)
	go func() { gone <- f.serve(r) }()
	time.Sleep(30 * time.Millisecond)
	cancel()
	if w := <-gone; w.Body.Len() != 0 {
		t.Fatalf("wrote %q to a client that left", w.Body)
	}
	close(f.app.gate)
	<-first
	if w := f.serve(f.request(msg, f.now.Unix(), "3")); w.Code != http.StatusOK || f.openReply(w.Body.Bytes()) != replyXML {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
}

// TestLeaseRenewed: an app slower than the lease keeps its message, as
// long as its gateway lives: the owner renews the claim, so a retry waits
// for the reply instead of taking the message over.
func TestLeaseRenewed(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AppTimeout = time.Minute })
	f.g.renew = 5 * time.Millisecond
	f.app.gate = make(chan struct{})
	f.app.reply = func([]byte) string { return replyXML }
	msg := textXML("8101", "slow", f.now.Unix())
	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- f.serve(f.request(msg, f.now.Unix(), "1")) }()
	waitFor(t, func() bool { return f.app.calls.Load() == 1 })
	// 20 s pass on the gateway's clock, in steps the renewals follow.
	start := f.now
	for i := 1; i <= 10; i++ {
		f.clock.Store(start.Add(time.Duration(i) * 2 * time.Second).UnixNano())
		time.Sleep(20 * time.Millisecond)
	}
	second := make(chan *httptest.ResponseRecorder)
	go func() { second <- f.serve(f.request(msg, f.now.Unix(), "2")) }()
	time.Sleep(50 * time.Millisecond)
	if n := f.app.calls.Load(); n != 1 {
		t.Fatalf("the retry took a live claim over: app called %d times", n)
	}
	close(f.app.gate)
	for _, ch := range []chan *httptest.ResponseRecorder{first, second} {
		if w := <-ch; w.Code != 200 || f.openReply(w.Body.Bytes()) != replyXML {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
}

// TestWaiterSurvivesStoreHiccup: a retry waiting for the first reply
// keeps polling through a store that stalls for a while.
func TestWaiterSurvivesStoreHiccup(t *testing.T) {
	st := memstore.New()
	f := newFixture(t, func(c *Config) { c.Marks = st.Open(); c.OpTimeout = 20 * time.Millisecond })
	f.app.gate = make(chan struct{})
	f.app.reply = func([]byte) string { return replyXML }
	msg := textXML("9501", "x", f.now.Unix())
	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- f.serve(f.request(msg, f.now.Unix(), "1")) }()
	waitFor(t, func() bool { return f.app.calls.Load() == 1 })
	second := make(chan *httptest.ResponseRecorder)
	go func() { second <- f.serve(f.request(msg, f.now.Unix(), "2")) }()
	time.Sleep(80 * time.Millisecond) // the retry is waiting
	st.Pause()
	time.Sleep(200 * time.Millisecond) // its polls time out
	st.Resume()
	close(f.app.gate)
	for _, ch := range []chan *httptest.ResponseRecorder{first, second} {
		if w := <-ch; w.Code != 200 || f.openReply(w.Body.Bytes()) != replyXML {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
	}
	if f.app.calls.Load() != 1 {
		t.Fatalf("app %d", f.app.calls.Load())
	}
}
