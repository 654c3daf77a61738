package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-wechat/wechat/fakewechat"
)

// The -push mode: wechat_push (safe mode) in front of an app that
// answers at once with a passive reply, loaded by signed, encrypted
// pushes of distinct messages at a fixed rate (open loop, latency counted
// from each push's scheduled time, so a stall is not hidden), then as
// fast as c connections go. Every reply's signature is checked and it is
// decrypted afterwards, and the app must have seen each message once.

const (
	benchPushToken = "benchPushToken01"
	benchPushKey   = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
	benchPushAppID = "wx00000000benchpush"
	benchPushOrig  = "gh_00000benchpush"
)

type pushResult struct {
	sent, ok, errors, late int64
	lat                    []time.Duration
	elapsed                time.Duration
}

func runPush(bin, dir string, rate int, d time.Duration, conns int, useStore bool) {
	// The app: parse nothing, answer a fixed passive reply, count.
	var appCalls atomic.Int64
	reply := []byte("<xml><ToUserName><![CDATA[oBenchUser]]></ToUserName><FromUserName><![CDATA[" + benchPushOrig + "]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[ok]]></Content></xml>")
	appPort := freePort()
	appSrv := &http.Server{Addr: fmt.Sprintf("127.0.0.1:%d", appPort), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		appCalls.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		_, _ = w.Write(reply)
	})}
	go func() { _ = appSrv.ListenAndServe() }()
	defer appSrv.Close()

	store := ""
	name := "wechat_push (in-process marks)"
	if useStore {
		mcAddr, _ := startMemcached(dir)
		store = "\t\t\tstore memcache {\n\t\t\t\tservers " + mcAddr + "\n\t\t\t}\n"
		name = "wechat_push + memcache store"
	}
	os.Setenv("BENCH_PUSH_TOKEN", benchPushToken)
	os.Setenv("BENCH_PUSH_KEY", benchPushKey)
	port := freePort()
	site := fmt.Sprintf("http://127.0.0.1:%d {\n\thandle /wx {\n\t\twechat_push {\n\t\t\tappid %s\n\t\t\ttoken {env.BENCH_PUSH_TOKEN}\n\t\t\tencoding_aes_key {env.BENCH_PUSH_KEY}\n%s\t\t}\n\t\treverse_proxy 127.0.0.1:%d\n\t}\n}\n",
		port, benchPushAppID, store, appPort)
	p := startCaddy(bin, dir, "push", globalOpts("")+site)
	waitPort(p, fmt.Sprintf("127.0.0.1:%d", port))
	target := fmt.Sprintf("http://127.0.0.1:%d/wx", port)

	pusher := &fakewechat.Pusher{Account: fakewechat.PushAccount{Token: benchPushToken, EncodingAESKey: benchPushKey, AppID: benchPushAppID, OriginalID: benchPushOrig}}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns * 2, MaxConnsPerHost: conns * 2}, Timeout: 5 * time.Second}
	var msgID atomic.Int64
	msgID.Store(time.Now().UnixNano() / 1000)

	// Requests are signed and encrypted before the clock starts, so the
	// generator's own crypto does not compete with the gateway for CPU.
	build := func(n int) [][2][]byte {
		out := make([][2][]byte, n)
		for i := range out {
			msg := fakewechat.TextMessage(benchPushOrig, "oBenchUser", "hello", msgID.Add(1), time.Now())
			r, err := pusher.Request(target, msg)
			if err != nil {
				fatalf("push request: %v", err)
			}
			body, _ := io.ReadAll(r.Body)
			out[i] = [2][]byte{[]byte(r.URL.String()), body}
		}
		return out
	}
	var replies [][]byte
	var repMu sync.Mutex
	send := func(req [2][]byte) error {
		resp, err := client.Post(string(req[0]), "text/xml", bytes.NewReader(req[1]))
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("status %d %v", resp.StatusCode, err)
		}
		repMu.Lock()
		replies = append(replies, b)
		repMu.Unlock()
		return nil
	}

	// Warm up.
	for _, r := range build(200) {
		_ = send(r)
	}
	replies = replies[:0]
	calls0 := appCalls.Load()

	// Open loop at rate.
	n := int(float64(rate) * d.Seconds())
	reqs := build(n)
	res := &pushResult{}
	type job struct {
		req [2][]byte
		at  time.Time
	}
	jobs := make(chan job, conns)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				err := send(j.req)
				l := time.Since(j.at)
				mu.Lock()
				if err != nil {
					res.errors++
				} else {
					res.ok++
					res.lat = append(res.lat, l)
				}
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i, r := range reqs {
		at := start.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		select {
		case jobs <- job{r, at}:
		default:
			res.late++ // every worker busy: the gateway is not keeping up
			jobs <- job{r, at}
		}
		res.sent++
	}
	close(jobs)
	wg.Wait()
	res.elapsed = time.Since(start)
	openCalls := appCalls.Load() - calls0
	verified := verifyReplies(pusher, replies)
	fmt.Printf("== %s, open loop: %d pushes at %d/s over %s, %d workers ==\n", name, n, rate, d, conns)
	fmt.Printf("achieved %.0f pushes/s; ok %d, errors %d, late dispatches %d; latency from schedule p50 %s p99 %s max %s ms\n",
		float64(res.ok)/res.elapsed.Seconds(), res.ok, res.errors, res.late, pct(res.lat, 50), pct(res.lat, 99), pct(res.lat, 100))
	fmt.Printf("app saw %d messages (want %d); %d replies verified and decrypted\n", openCalls, n, verified)
	if res.errors > 0 || openCalls != int64(n) || verified != n {
		fatalf("push bench failed")
	}

	// Closed loop: as fast as conns connections go, for d.
	replies = replies[:0]
	calls0 = appCalls.Load()
	reqs = build(max(2*rate*int(d.Seconds()), 4000)) // more than the run can use
	var idx, okN, errN atomic.Int64
	stop := time.Now().Add(d)
	start = time.Now()
	var wg2 sync.WaitGroup
	for range conns {
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			for time.Now().Before(stop) {
				i := idx.Add(1) - 1
				if int(i) >= len(reqs) {
					return
				}
				if send(reqs[i]) != nil {
					errN.Add(1)
				} else {
					okN.Add(1)
				}
			}
		}()
	}
	wg2.Wait()
	el := time.Since(start)
	fmt.Printf("== %s, closed loop: %d connections ==\n", name, conns)
	fmt.Printf("%.0f pushes/s (%d in %s, %d errors); app saw %d\n\n", float64(okN.Load())/el.Seconds(), okN.Load(), el.Round(time.Millisecond), errN.Load(), appCalls.Load()-calls0)
}

func verifyReplies(p *fakewechat.Pusher, replies [][]byte) int {
	n := 0
	for _, b := range replies {
		if plain, err := p.OpenReply(b); err == nil && bytes.Contains(plain, []byte("<Content><![CDATA[ok]]></Content>")) {
			n++
		}
	}
	return n
}

func pct(l []time.Duration, p int) string {
	if len(l) == 0 {
		return "-"
	}
	s := append([]time.Duration(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := len(s) * p / 100
	if i >= len(s) {
		i = len(s) - 1
	}
	return ms(s[i])
}
