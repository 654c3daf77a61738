package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/caddy-wechat/wechat/fakewechat"
)

// The soak of issue 20: two gateway instances sharing one store, for each
// store in turn, under steady GETs and replayable POSTs, while the soak
// revokes and expires tokens at the fake, crashes and restarts the store
// server and reloads one instance's config. A plain reverse_proxy takes
// the same traffic and the same reload, so what a graceful reload costs
// any Caddy (connections closed or reset under a client's request) is
// counted apart from what the gateway could have served. BENCHMARKS.md
// has the figures.
//
//	go run ./bench -soak -stores memcache,redis,postgres,storage -soak-duration 1m
//
// The fake runs inside the bench, so that the soak can call its controls
// (RevokeAll, ExpireAll, SetTokenTTL); the gateways reach it over loopback
// like any upstream.

// soakStores run when -stores is empty.
var soakStores = []string{"memcache", "redis", "postgres", "storage"}

// soakOpts are the soak's flags.
type soakOpts struct {
	d     time.Duration // length of one store's soak
	rate  int           // requests per second per target
	conns int           // keep-alive connections per target
	down  time.Duration // how long the store server stays dead
	// reloads of gateway A (and of the proxy), 0.5 s apart: one by
	// default; more give the keep-alive race more chances to show.
	reloads int
	// evidence adds what the gateway may misread as "the token is fine":
	// a caller of an API that answers 40001 whatever the token, and a
	// WeChat-wide glitch followed by a revocation (issue 20, item 1).
	evidence bool
}

// soakMain runs the soak on each store and returns the exit code: 1 if
// any request failed that the gateway could have served.
func soakMain(caddyBin, storeArg string, o soakOpts) int {
	stores := parseStores(storeArg)
	if len(stores) == 0 {
		stores = soakStores
	}
	dir, err := os.MkdirTemp("", "wechat-soak-")
	if err != nil {
		fatalf("%v", err)
	}
	failed := 0
	defer func() {
		if failed == 0 {
			os.RemoveAll(dir)
			return
		}
		// The Caddies' logs say what the gateways did meanwhile.
		fmt.Printf("\nlogs kept: %s/soak-<store>/{gateway-a,gateway-b,proxy}.log\n", dir)
	}()
	if os.Geteuid() == 0 {
		_ = os.Chmod(dir, 0o711) // postgres runs as its own user below it
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; fatalf("interrupted") }()
	os.Setenv("BENCH_WECHAT_SECRET", secret)

	bin := caddyBin
	if bin == "" {
		fmt.Fprintf(os.Stderr, "building ./bench/caddy ...\n")
		bin = buildCaddy(dir, "./bench/caddy")
	}
	fmt.Printf("machine: %d CPUs, %s, %s; load average %s", runtime.NumCPU(), cpuModel(), runtime.Version(), loadavg())
	for _, name := range stores {
		failed += soakStore(bin, dir, name, o)
		stopAll()
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// soakCaddy is one Caddy under soak and the Caddyfile it runs.
type soakCaddy struct {
	name, url, admin string
	site, body       string
	p                *proc
}

// startSoakCaddy runs body as the one site of a Caddy, with an admin API
// on loopback if admin is set (the instances the soak reloads).
func startSoakCaddy(bin, dir, name string, admin bool, body string) *soakCaddy {
	port := freePort()
	c := &soakCaddy{name: name, site: fmt.Sprintf("http://127.0.0.1:%d", port), body: body}
	c.url = c.site
	if admin {
		c.admin = fmt.Sprintf("127.0.0.1:%d", freePort())
	}
	c.p = startCaddy(bin, dir, name, c.caddyfile(""))
	waitPort(c.p, strings.TrimPrefix(c.site, "http://"))
	return c
}

func (c *soakCaddy) caddyfile(extra string) string {
	return globalOpts(c.admin) + c.site + " {\n" + extra + c.body + "}\n"
}

// reload posts the same Caddyfile plus a harmless vars line to /load: an
// identical config would be skipped by Caddy and reload nothing.
func (c *soakCaddy) reload(n int) error {
	cf := c.caddyfile("\tvars soak_reload " + strconv.Itoa(n) + "\n")
	req, err := http.NewRequest("POST", "http://"+c.admin+"/load", strings.NewReader(cf))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != 200 {
		return fmt.Errorf("POST /load: %d %s", resp.StatusCode, b)
	}
	// The running config must be the new one, or nothing was reloaded.
	resp, err = httpc.Get("http://" + c.admin + "/config/apps/http")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if want := fmt.Sprintf(`"soak_reload":%d`, n); !bytes.Contains(b, []byte(want)) {
		return fmt.Errorf("after POST /load the running config lacks %s", want)
	}
	return nil
}

// soakTarget sends the soak's requests to one Caddy over its own pool of
// keep-alive connections.
type soakTarget struct {
	name  string
	base  string
	path  string        // a GET of this path only; "": GETs and POSTs of the echo
	token func() string // the plain proxy's client brings its own; nil: the gateway adds it
	c     *http.Client
}

func newSoakTarget(name, base string, conns int, token func() string) *soakTarget {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: 5 * time.Minute, DisableCompression: true}
	return &soakTarget{name: name, base: base, token: token, c: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// postPath is a replayable POST: a small JSON body the gateway holds.
const postPath = "/cgi-bin/message/custom/send?soak=1"

// do sends request n, a GET or a POST, and says what came back.
func (t *soakTarget) do(start time.Time, n int, post bool) outcome {
	method, path, body := "GET", apiPath, []byte(nil)
	if t.path != "" {
		path, post = t.path, false
	} else if post {
		method, path = "POST", postPath
		body = fmt.Appendf(nil, `{"touser":"o1","msgtype":"text","text":{"content":"soak %s %d"}}`, t.name, n)
	}
	o := outcome{target: t.name, post: post}
	u := t.base + path
	if t.token != nil {
		u += "&access_token=" + url.QueryEscape(t.token())
	}
	var attempts, reused atomic.Int32
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		attempts.Add(1)
		if i.Reused {
			reused.Store(1)
		}
	}}
	var rd io.Reader // nil for a GET: a typed nil *bytes.Reader would not do
	if post {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, u, rd)
	if err != nil {
		fatalf("%v", err)
	}
	if post {
		req.Header.Set("Content-Type", "application/json")
	}
	t0 := time.Now()
	o.at = t0.Sub(start)
	resp, err := t.c.Do(req)
	var b []byte
	if err == nil {
		o.status = resp.StatusCode
		b, err = io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
	}
	o.latency = time.Since(t0)
	o.attempts, o.reused = int(attempts.Load()), reused.Load() == 1
	if err != nil {
		o.err = shortErr(err)
		return o
	}
	var ans struct {
		Errcode int    `json:"errcode"`
		Errmsg  string `json:"errmsg"`
		Method  string `json:"method"`
		Path    string `json:"path"`
		BodySHA string `json:"body_sha256"`
	}
	if json.Unmarshal(b, &ans) != nil {
		o.mismatch, o.detail = "not JSON", snippet(string(b))
		return o
	}
	o.errcode = ans.Errcode
	sum := sha256.Sum256(body)
	switch {
	case ans.Errcode != 0 || o.status != 200:
		o.detail = snippet(stripRID(ans.Errmsg))
	case t.path != "":
	case ans.Method != method || ans.Path != strings.Split(path, "?")[0]:
		o.mismatch = "echo of " + ans.Method + " " + ans.Path
	case post && ans.BodySHA != hex.EncodeToString(sum[:]):
		o.mismatch = "the POST body reached WeChat changed"
	}
	return o
}

// stripRID drops WeChat's "rid: …" so equal errors group.
func stripRID(msg string) string {
	if i := strings.LastIndex(msg, " rid:"); i >= 0 {
		return msg[:i]
	}
	return msg
}

func snippet(s string) string {
	if len(s) > 160 {
		return s[:160] + "…"
	}
	return s
}

// shortErr keeps the cause of a transport error, not the URL (the proxy's
// URLs carry the client's token) nor the ports, so equal causes group.
func shortErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		cause := oe.Err
		var se *os.SyscallError
		if errors.As(cause, &se) {
			cause = se.Err
		}
		return oe.Op + ": " + cause.Error()
	}
	return err.Error()
}

// drive loads t at rate requests a second over conns connections until
// the soak's end, alternating GETs and POSTs. It never bursts to catch up
// after a slow answer: the load stays bounded whatever the gateway does.
func (t *soakTarget) drive(start time.Time, d time.Duration, rate, conns int) []outcome {
	interval := time.Duration(float64(conns) / float64(rate) * float64(time.Second))
	var (
		mu  sync.Mutex
		all []outcome
		wg  sync.WaitGroup
	)
	for i := range conns {
		wg.Go(func() {
			var mine []outcome
			next := start.Add(time.Duration(i) * interval / time.Duration(conns))
			for k := 0; ; k++ {
				if w := time.Until(next); w > 0 {
					time.Sleep(w)
				}
				if time.Since(start) >= d {
					break
				}
				// Each worker alternates; n numbers the POST bodies.
				n := i + k*conns
				mine = append(mine, t.do(start, n, (i+k)%2 == 1))
				next = next.Add(interval)
				if now := time.Now(); next.Before(now) {
					next = now
				}
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return all
}

// soakStore runs one store's soak and prints its table; it returns the
// number of requests that failed and that the gateway could have served.
func soakStore(bin, dir, name string, o soakOpts) int {
	sdir := filepath.Join(dir, "soak-"+name)
	if err := os.MkdirAll(sdir, 0o755); err != nil {
		fatalf("%v", err)
	}
	if os.Geteuid() == 0 {
		_ = os.Chmod(sdir, 0o711)
	}
	fw := fakewechat.New(fakewechat.Options{AppID: appID, Secret: secret})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("%v", err)
	}
	hs := &http.Server{Handler: fw, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	fake := "http://" + ln.Addr().String()

	sb := startStore(name, sdir)
	block := sb.block
	if name == "storage" {
		// Both instances on one plain file_system root: a cluster.
		block = fmt.Sprintf("\t\tstore storage {\n\t\t\tstorage file_system {\n\t\t\t\troot %s\n\t\t\t}\n\t\t}\n", filepath.Join(sdir, "storage"))
	}
	wechat := fmt.Sprintf("\twechat {\n\t\tappid %s\n\t\tsecret {env.BENCH_WECHAT_SECRET}\n\t\tupstream %s\n%s\t}\n", appID, fake, block)
	gwA := startSoakCaddy(bin, sdir, "gateway-a", true, wechat)
	gwB := startSoakCaddy(bin, sdir, "gateway-b", false, wechat)
	px := startSoakCaddy(bin, sdir, "proxy", true, "\treverse_proxy "+ln.Addr().String()+"\n")
	check("gateway A", gwA.url+apiPath)
	check("gateway B", gwB.url+apiPath)
	check("reverse_proxy", px.url+apiPath+"&access_token="+url.QueryEscape(fw.CurrentStable()))
	fw.Reset()

	targets := []*soakTarget{
		newSoakTarget("A", gwA.url, o.conns, nil),
		newSoakTarget("B", gwB.url, o.conns, nil),
		// The plain proxy's client fetches its token as an app must,
		// here straight from the fake's memory: its token errors are the
		// app's business, only its transport errors are compared.
		newSoakTarget("proxy", px.url, o.conns, fw.CurrentStable),
	}
	// Short enough that refresh-ahead renews each token within the soak
	// (at half its life, useBy at three quarters).
	ttl := min(max(o.d/4, 15*time.Second), 2*time.Hour)
	start := time.Now()
	var (
		events  []event
		reloads = map[string][]window{}
		wg      sync.WaitGroup
		results = make([][]outcome, len(targets))
	)
	for i, t := range targets {
		wg.Go(func() { results[i] = t.drive(start, o.d, o.rate, o.conns) })
	}
	// The 40001-only callers: one call a second on each gateway, their
	// answers counted apart (40001 is what WeChat says to them).
	var always [2][]outcome
	if o.evidence {
		for i, g := range []*soakCaddy{gwA, gwB} {
			t := newSoakTarget(targets[i].name, g.url, 1, nil)
			t.path = fakewechat.AlwaysInvalidPath + "?soak=1"
			wg.Go(func() { always[i] = t.drive(start, o.d, 1, 1) })
		}
	}
	var glitches []window
	at := func(frac float64) {
		if w := time.Until(start.Add(time.Duration(frac * float64(o.d)))); w > 0 {
			time.Sleep(w)
		}
	}
	record := func(name string, run func() string) {
		t0 := time.Since(start)
		note := run()
		events = append(events, event{at: t0, end: time.Since(start), name: name, note: note})
	}
	forceRefresh := func() string {
		fw.ResetQuotas() // the other system's call is not refused for the gateway's own
		b, _ := json.Marshal(map[string]any{"grant_type": "client_credential", "appid": appID, "secret": secret, "force_refresh": true})
		resp, err := httpc.Post(fake+"/cgi-bin/stable_token", "application/json", bytes.NewReader(b))
		if err != nil {
			return "failed: " + err.Error()
		}
		defer resp.Body.Close()
		var ans struct {
			Errcode int `json:"errcode"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&ans)
		if ans.Errcode != 0 {
			return fmt.Sprintf("the fake refused it: errcode %d", ans.Errcode)
		}
		return "a new token; the one the gateways hold answers 40001"
	}
	wg.Go(func() {
		at(0.10)
		record("force_refresh by another system", forceRefresh)
		at(0.22)
		record("every token expired (42001)", func() string {
			fw.SetTokenTTL(ttl)
			fw.ExpireAll()
			return fmt.Sprintf("tokens issued from now on live %s, so renewals ahead of expiry follow", ttl)
		})
		at(0.36)
		if sb.restart != nil {
			// The outage must be met: the gateways lose their token
			// while the store is dead, and fetch without it.
			t0 := time.Since(start)
			sb.restart(func() {
				events = append(events, event{at: t0, end: time.Since(start), name: "store server killed"})
				time.Sleep(o.down / 2)
				record("every token revoked while the store is down", func() string { fw.RevokeAll(); return "" })
				time.Sleep(o.down / 2)
			})
			events = append(events, event{at: time.Since(start), end: time.Since(start), name: "store server restarted",
				note: "on the same port and data dir, ready"})
		} else {
			record("every token revoked (no store server to restart: "+name+")", func() string { fw.RevokeAll(); return "" })
		}
		at(0.55)
		record("every token revoked (40001: the fake's secret reset)", func() string { fw.RevokeAll(); return "" })
		// A revocation right after the fetch that repaired the last
		// one: the fresh token's vouch must not blind the gateway
		// (issue 20, item 1).
		time.Sleep(time.Second)
		record("every token revoked again, 1 s later", func() string { fw.RevokeAll(); return "" })
		if o.evidence {
			at(0.62)
			g := 2 * time.Second
			record("a WeChat-wide glitch: every token rejected for "+g.String(), func() string {
				fw.Glitch(g)
				t0 := time.Since(start)
				glitches = append(glitches, glitchWindow(t0, t0+g))
				time.Sleep(g + 500*time.Millisecond)
				return ""
			})
			record("every token revoked, 0.5 s after the glitch's end", func() string { fw.RevokeAll(); return "" })
		}
		at(0.70)
		what := "config reload of gateway A and of reverse_proxy"
		if o.reloads > 1 {
			what = fmt.Sprintf("%d config reloads of gateway A and of reverse_proxy, 0.5 s apart", o.reloads)
		}
		record(what, func() string {
			var rw sync.WaitGroup
			took := map[string][]string{}
			var mu sync.Mutex
			for k := range o.reloads * 2 {
				c := []*soakCaddy{gwA, px}[k%2]
				if k >= 2 && k%2 == 0 {
					rw.Wait() // one pair at a time, 0.5 s apart
					time.Sleep(500 * time.Millisecond)
				}
				rw.Go(func() {
					t0 := time.Since(start)
					err := c.reload(k/2 + 1)
					w := reloadWindow(t0, time.Since(start))
					mu.Lock()
					defer mu.Unlock()
					reloads[c.name] = append(reloads[c.name], w)
					if err != nil {
						took[c.name] = append(took[c.name], err.Error())
					} else {
						took[c.name] = append(took[c.name], (w.to - w.from - 2100*time.Millisecond).Round(time.Millisecond).String())
					}
				})
			}
			rw.Wait()
			return "POST /load took " + strings.Join(took["gateway-a"], ", ") + " (gateway A), " + strings.Join(took["proxy"], ", ") + " (reverse_proxy)"
		})
		at(0.85)
		record("force_refresh by another system", forceRefresh)
	})
	wg.Wait()
	elapsed := time.Since(start)

	// Classify now that the reload windows are known.
	win := map[string]excuses{
		"A":     {reloads: reloads["gateway-a"], glitches: glitches},
		"B":     {glitches: glitches},
		"proxy": {reloads: reloads["proxy"], glitches: glitches},
	}
	tallies := map[string]*tally{}
	var fails []outcome
	var fclasses []class
	for i, t := range targets {
		tl := &tally{}
		tallies[t.name] = tl
		for _, oc := range results[i] {
			c := tl.add(oc, win[t.name])
			if t.name != "proxy" && !excused(c) {
				fails = append(fails, oc)
				fclasses = append(fclasses, c)
			}
		}
	}
	slices.SortFunc(events, func(a, b event) int { return int(a.at - b.at) })
	// The failures in the order sent, classes alongside.
	idx := make([]int, len(fails))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return int(fails[a].at - fails[b].at) })
	sf, sc := make([]outcome, len(fails)), make([]class, len(fails))
	for i, j := range idx {
		sf[i], sc[i] = fails[j], fclasses[j]
	}
	printSoak(name, o, elapsed, events, targets, tallies, sf, sc, fw, []*soakCaddy{gwA, gwB})
	if o.evidence {
		for i, g := range []string{"A", "B"} {
			m := map[string]int{}
			for _, oc := range always[i] {
				m[kind(oc, classify(oc, excuses{}))]++
			}
			fmt.Printf("40001-only API on gateway %s (not counted above; WeChat answers it 40001 whatever the token): %s\n", g, counts(m))
		}
	}
	return tallies["A"].failed() + tallies["B"].failed()
}

// printSoak prints one store's table.
func printSoak(store string, o soakOpts, elapsed time.Duration, events []event, targets []*soakTarget,
	tallies map[string]*tally, fails []outcome, classes []class, fw *fakewechat.Server, gws []*soakCaddy) {
	fmt.Printf("\n== soak on %s: gateways A and B sharing it, and a plain reverse_proxy; %s, %d req/s and %d keep-alive connections per target, GET and POST alternating ==\n",
		store, elapsed.Round(time.Second), o.rate, o.conns)
	fmt.Println("events (from the start):")
	for _, e := range events {
		note := ""
		if e.note != "" {
			note = ": " + e.note
		}
		fmt.Printf("  %6.1fs  %s%s\n", e.at.Seconds(), e.name, note)
	}
	fmt.Printf("%-14s %9s %7s %7s %8s %7s %14s %9s %8s %8s %8s\n", "target", "requests", "GET", "POST", "ok", "failed", "reload-lost", "retried", "p50 ms", "p99 ms", "max ms")
	var sum tally
	for _, t := range targets {
		tl := tallies[t.name]
		label := map[string]string{"A": "gateway A", "B": "gateway B", "proxy": "reverse_proxy"}[t.name]
		failed := fmt.Sprint(tl.failed())
		if t.name == "proxy" {
			// Its token errors are its client's: only transport counts.
			failed = fmt.Sprint(tl.by[classTransport] + tl.by[classStatus])
		} else {
			sum.requests += tl.requests
			for c := range tl.by {
				sum.by[c] += tl.by[c]
			}
		}
		fmt.Printf("%-14s %9d %7d %7d %8d %7s %14s %4d+%-4d %8s %8s %8s\n", label, tl.requests, tl.gets, tl.posts, tl.by[classOK], failed,
			fmt.Sprintf("%d+%d", tl.by[classReload], tl.by[classReloadNew]), tl.retriedAtReload, tl.retriedElsewhere, ms(tl.pct(0.5)), ms(tl.pct(0.99)), ms(tl.pct(1)))
	}
	fmt.Println("  failed: the gateway could have served it (non-2xx, an errcode reaching the client, a transport error outside a reload, a wrong echo);")
	fmt.Println("  reload-lost: transport errors at a reload, on a reused keep-alive connection (Caddy's graceful close) + on a new one")
	fmt.Println("    (reset in the old listener's backlog): Caddy's, not the gateway's, and the plain reverse_proxy loses them too;")
	fmt.Println("  retried: GETs Go's client resent silently on a new connection, at a reload + elsewhere.")
	for _, t := range targets {
		if tl := tallies[t.name]; len(tl.closed) > 0 {
			fmt.Printf("  reload-lost on %s: %s\n", t.name, counts(tl.closed))
		}
	}
	if p := tallies["proxy"]; len(p.lost) > 0 {
		fmt.Printf("  reverse_proxy failed: %s\n", counts(p.lost))
	}
	if p := tallies["proxy"]; p.by[classToken]+p.by[classErrcode] > 0 {
		fmt.Printf("  reverse_proxy: %d answers carried a token errcode for its client's own token (the app's problem the gateway removes; not counted)\n", p.by[classToken]+p.by[classErrcode])
	}
	fmt.Printf("failed requests the gateway could have served: %d of %d %s\n", sum.failed(), sum.requests, verdict(sum.failed() == 0, "0"))
	for _, ef := range attribute(fails, classes, events) {
		open := ""
		if ef.open {
			open = " (still failing when the next event came)"
		}
		fmt.Printf("  after %q (%.1fs): %d failed, +%.2fs..+%.2fs%s; %s; on %s\n", ef.event, ef.at.Seconds(), ef.n,
			ef.first.Seconds(), ef.last.Seconds(), open, counts(ef.kinds), counts(ef.targets))
	}
	details := map[string]int{}
	for i, f := range fails {
		if f.detail != "" {
			details[kind(f, classes[i])+": "+f.detail]++
		}
	}
	if len(details) > 0 {
		fmt.Printf("  answers: %s\n", counts(details))
	}
	fmt.Printf("fake: %d stable_token calls (%d forced, the soak's included), %d probes (%d rejected); API calls rejected: 40001 ×%d, 42001 ×%d, 41001 ×%d (each replayed by the gateway unless counted above)\n",
		fw.Fetches("stable"), fw.Fetches("stable_force"), fw.Fetches("probe"), fw.Fetches("probe_rejected"),
		fw.Rejected(40001), fw.Rejected(42001), fw.Rejected(41001))
	for _, g := range gws {
		if l := logSummary(g.p.log); l != "" {
			fmt.Printf("%s log, the gateway's warnings and all errors: %s\n", g.name, l)
		}
	}
}

// logSummary counts a Caddy log's warn and error lines by message (and
// error text): the gateway's own account of what went wrong. Its errors
// hold no credential, by the gateway's promise.
func logSummary(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	m := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l struct {
			Level  string `json:"level"`
			Logger string `json:"logger"`
			Msg    string `json:"msg"`
			Error  string `json:"error"`
		}
		// Only the gateway's lines and errors: not Caddy's notes that a
		// loopback site has no HTTP/2 or admin API.
		if json.Unmarshal(sc.Bytes(), &l) != nil || !(l.Level == "error" || l.Level == "warn" && strings.Contains(l.Logger, "wechat")) {
			continue
		}
		k := l.Level + " " + l.Logger + ": " + l.Msg
		if l.Error != "" {
			k += " (" + snippet(l.Error) + ")"
		}
		m[k]++
	}
	return counts(m)
}
