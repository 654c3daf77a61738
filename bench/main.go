// Command bench is the load benchmark of issue 5: it measures the wechat
// gateway against plain reverse_proxy in front of the same fake WeChat, so
// the cost of the module is a ratio anyone can reproduce. Run it from the
// module root:
//
//	go run ./bench
//
// It builds ./cmd/caddy, starts the fake, a gateway (in-process token
// store), a gateway with memcache, and a plain reverse_proxy whose client
// sends a valid token itself, all on 127.0.0.1, and loads them in turn,
// A/B, for several rounds. Nothing but Go, wrk and memcached is needed (a
// Go load generator is used when wrk is absent). BENCHMARKS.md has figures.
//
// -stores memcache,redis,mysql,postgres,storage adds a gateway per store,
// each with a private server in the temp dir, and prints each server's
// own counters per 1,000 gateway requests after the load.
//
// -soak runs issue 20's soak instead (soak.go): two gateways per store
// under revocations, expiries, a store restart and a config reload.
//
// -push loads wechat_push instead (bench/push.go): signed, encrypted
// pushes at -rate per second for -d, then closed loop on -c connections,
// with in-process marks and with a memcache store.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

func fatalf(format string, args ...any) {
	stopAll()
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

// target is one thing under load and its results per round.
type target struct {
	name, url string
	runs      []result // of the current phase
	total     int64    // requests over all phases
}

func main() {
	var (
		rounds   = flag.Int("rounds", 6, "A/B rounds (even: each order runs as often as its reverse)")
		dur      = flag.Duration("d", 5*time.Second, "length of one load run")
		conns    = flag.Int("c", 32, "concurrent connections of the throughput pass")
		threads  = flag.Int("t", 2, "wrk threads")
		lightC   = flag.Int("lc", 1, "connections of the light-load latency pass (0: skip it)")
		lightD   = flag.Duration("ld", 2*time.Second, "length of one light-load run")
		useMC    = flag.Bool("memcache", true, "also run a gateway with a memcache store (same as -stores memcache)")
		storeArg = flag.String("stores", "", "also run a gateway on each of these stores, each with its own server, and print the servers' counters: some of "+strings.Join(storeNames, ","))
		gen      = flag.String("gen", "auto", "load generator: auto, wrk or go")
		caddyBin = flag.String("caddy", "", "use this caddy binary instead of building ./cmd/caddy")
		profDir  = flag.String("cpuprofile", "", "after the rounds, write CPU profiles of the gateway and the proxy under load to this directory")
		pushMode = flag.Bool("push", false, "instead: load wechat_push with signed, encrypted pushes (-rate per second for -d, then closed loop on -c connections), in-process marks and a memcache store")
		rate     = flag.Int("rate", 1000, "pushes per second of the -push open-loop run")
		soak     = flag.Bool("soak", false, "instead of the A/B rounds, soak two gateways on each of -stores (default "+strings.Join(soakStores, ",")+") under revocations, expiries, a store restart and a reload (issue 20)")
		soakDur  = flag.Duration("soak-duration", time.Minute, "length of the soak on each store")
		soakRate = flag.Int("soak-rate", 200, "requests per second per soaked target")
		soakConn = flag.Int("soak-conns", 16, "keep-alive connections per soaked target")
		soakDown = flag.Duration("soak-store-down", 3*time.Second, "how long the soak's killed store server stays down")
		soakRel  = flag.Int("soak-reloads", 1, "config reloads of the soak's gateway A (and of its reverse_proxy), 0.5 s apart")
		soakEv   = flag.Bool("soak-evidence", false, "the soak also calls an API that answers 40001 whatever the token (1/s per gateway), and revokes the token 0.5 s after a 2 s WeChat-wide glitch")
	)
	flag.Parse()
	if *soak {
		if *soakRate < 1 || *soakConn < 1 || *soakDur <= 0 || *soakRel < 1 {
			fatalf("-soak-rate, -soak-conns, -soak-reloads and -soak-duration must be positive")
		}
		os.Exit(soakMain(*caddyBin, *storeArg, soakOpts{d: *soakDur, rate: *soakRate, conns: *soakConn, down: *soakDown, reloads: *soakRel, evidence: *soakEv}))
	}

	gl := pickGen(*gen, *threads)
	dir, err := os.MkdirTemp("", "wechat-bench-")
	if err != nil {
		fatalf("%v", err)
	}
	defer os.RemoveAll(dir)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() { <-sig; fatalf("interrupted") }()

	stores := parseStores(*storeArg)
	if *useMC && !slices.Contains(stores, "memcache") {
		stores = append([]string{"memcache"}, stores...)
	}
	bin := *caddyBin
	if bin == "" {
		// The storage store's run needs the counting storage module; the
		// rest of that binary is ./cmd/caddy, and every target runs it.
		pkg := "./cmd/caddy"
		if slices.Contains(stores, "storage") {
			pkg = "./bench/caddy"
		}
		fmt.Fprintf(os.Stderr, "building %s ...\n", pkg)
		bin = buildCaddy(dir, pkg)
	}
	if *pushMode {
		fmt.Printf("machine: %d CPUs, %s, %s %s/%s; load average before: %s", runtime.NumCPU(), cpuModel(), runtime.Version(), runtime.GOOS, runtime.GOARCH, loadavg())
		runPush(bin, dir, *rate, *dur, *conns, false)
		if *useMC {
			runPush(bin, dir, *rate, *dur, *conns, true)
		}
		fmt.Printf("load average after:  %s", loadavg())
		stopAll()
		return
	}

	// The fake WeChat, in its own Caddy.
	fakePort := freePort()
	fake := fmt.Sprintf("http://127.0.0.1:%d", fakePort)
	p := startCaddy(bin, dir, "fake", globalOpts("")+fmt.Sprintf("http://127.0.0.1:%d {\n\twechat_fake {\n\t\tappid %s\n\t\tsecret %s\n\t}\n}\n", fakePort, appID, secret))
	waitPort(p, fmt.Sprintf("127.0.0.1:%d", fakePort))
	token := stableToken(fake)

	admin := map[string]string{}
	adminFor := func(name string) string {
		if *profDir == "" {
			return ""
		}
		admin[name] = fmt.Sprintf("127.0.0.1:%d", freePort())
		return admin[name]
	}
	serve := func(name, body string) string {
		port := freePort()
		p := startCaddy(bin, dir, name, globalOpts(adminFor(name))+fmt.Sprintf("http://127.0.0.1:%d {\n%s}\n", port, body))
		waitPort(p, fmt.Sprintf("127.0.0.1:%d", port))
		return fmt.Sprintf("http://127.0.0.1:%d", port)
	}
	wechat := func(extra string) string {
		return fmt.Sprintf("\twechat {\n\t\tappid %s\n\t\tsecret {env.BENCH_WECHAT_SECRET}\n\t\tupstream %s\n%s\t}\n", appID, fake, extra)
	}
	os.Setenv("BENCH_WECHAT_SECRET", secret)

	gw := &target{name: "gateway", url: serve("gateway", wechat("")) + apiPath}
	rp := &target{name: "reverse_proxy", url: serve("proxy", fmt.Sprintf("\treverse_proxy 127.0.0.1:%d\n", fakePort)) + apiPath + "&access_token=" + token}
	targets := []*target{gw, rp}
	var sbs []*storeBench
	for _, name := range stores {
		sb := startStore(name, dir)
		sb.initial = sb.read()
		sb.t = &target{name: "gateway+" + name, url: serve("gateway_"+name, wechat(sb.block)) + apiPath}
		targets = append(targets, sb.t)
		sbs = append(sbs, sb)
	}
	targets = append(targets, &target{name: "fake direct", url: fake + apiPath + "&access_token=" + token})

	// Every target must answer WeChat's success before it is timed; the
	// gateways fetch their token here, outside the measurement.
	for _, t := range targets {
		check(t.name, t.url)
	}
	fmt.Printf("machine: %d CPUs, %s, %s %s/%s; generator %s\n", runtime.NumCPU(), cpuModel(), runtime.Version(), runtime.GOOS, runtime.GOARCH, genName(*gen))
	fmt.Printf("path %s, %d rounds\n\n", apiPath, *rounds)
	for _, t := range targets {
		gl(t.url, *conns, time.Second) // warm up connections and heaps
	}

	for _, sb := range sbs {
		sb.before = sb.read()
	}
	started := time.Now()
	fmt.Printf("load average before: %s", loadavg())
	phase(gl, targets, *rounds, *conns, *dur)
	if *lightC > 0 {
		phase(gl, targets, *rounds, *lightC, *lightD)
	}
	fmt.Printf("load average after:  %s\n", loadavg())
	if len(sbs) > 0 {
		storeReport(sbs, time.Since(started))
	}
	if *profDir != "" {
		profileTargets(gl, *profDir, *conns, *dur, admin, gw, rp)
	}
	stopAll()
}

// phase loads every target in turn for rounds rounds, then prints the
// medians and the ratios to the plain proxy. The order is gateway, proxy,
// gateway+memcache, fake, then the reverse: the proxy always runs right
// next to each gateway, and a drift in the machine's speed (other jobs on
// a shared box) hits both sides of a ratio alike.
func phase(gl load, targets []*target, rounds, conns int, d time.Duration) {
	for _, t := range targets {
		t.runs = t.runs[:0]
	}
	for r := range rounds {
		for i := range targets {
			t := targets[i]
			if r%2 == 1 {
				t = targets[len(targets)-1-i]
			}
			res := gl(t.url, conns, d)
			if res.errors > 0 || res.requests == 0 {
				fatalf("%s: %d errors in %d requests", t.name, res.errors, res.requests)
			}
			t.runs = append(t.runs, res)
			t.total += res.requests
		}
	}
	fmt.Printf("== %d connections, %d x %s per target ==\n", conns, rounds, d)
	fmt.Printf("%-18s %10s %9s %9s   %s\n", "target", "req/s", "p50 ms", "p99 ms", "req/s per round")
	for _, t := range targets {
		var rps, p50, p99 []float64
		var per []string
		for _, r := range t.runs {
			rps, p50, p99 = append(rps, r.rps), append(p50, float64(r.p50)), append(p99, float64(r.p99))
			per = append(per, fmt.Sprintf("%.0f", r.rps))
		}
		fmt.Printf("%-18s %10.0f %9s %9s   %s\n", t.name, median(rps), ms(time.Duration(median(p50))), ms(time.Duration(median(p99))), strings.Join(per, " "))
	}
	rp := targets[1]
	for _, t := range targets {
		if !strings.HasPrefix(t.name, "gateway") {
			continue
		}
		var ratio, addP99 []float64
		for i, r := range t.runs {
			ratio = append(ratio, r.rps/rp.runs[i].rps)
			addP99 = append(addP99, float64(r.p99-rp.runs[i].p99))
		}
		q, a := median(ratio), time.Duration(median(addP99))
		fmt.Printf("%-18s throughput %.3fx reverse_proxy (median of rounds) %s; added p99 %s ms %s\n",
			t.name, q, verdict(q >= 0.95, ">= 0.95"), ms(a), verdict(a < time.Millisecond, "< 1 ms"))
	}
	fmt.Println()
}

func verdict(ok bool, goal string) string {
	if ok {
		return "[met: " + goal + "]"
	}
	return "[NOT met: " + goal + "]"
}

// profileTargets takes a CPU profile of the gateway and of the proxy, each
// under the same load as the rounds, through Caddy's admin pprof handler.
func profileTargets(gl load, dir string, conns int, d time.Duration, admin map[string]string, targets ...*target) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fatalf("%v", err)
	}
	names := map[string]string{"gateway": "gateway", "reverse_proxy": "proxy"}
	secs := max(int(d.Seconds())-1, 1)
	for _, t := range targets {
		file, _ := filepath.Abs(filepath.Join(dir, names[t.name]+".pprof"))
		var wg sync.WaitGroup
		var perr error
		wg.Go(func() { perr = profile(admin[names[t.name]], secs, file) })
		gl(t.url, conns, d)
		wg.Wait()
		if perr != nil {
			fatalf("profile %s: %v", t.name, perr)
		}
		fmt.Printf("profile of %s: %s\n", t.name, file)
	}
	fmt.Printf("read with: go tool pprof -top %s/gateway.pprof\n", dir)
}

func pickGen(gen string, threads int) load {
	_, err := exec.LookPath("wrk")
	switch {
	case gen == "go" || (gen == "auto" && err != nil):
		return goLoad
	case err != nil:
		fatalf("wrk not found (apt-get install wrk), or use -gen go")
	}
	return wrkLoad(threads)
}

func genName(gen string) string {
	if _, err := exec.LookPath("wrk"); gen == "go" || err != nil {
		return "go"
	}
	return "wrk"
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// loadavg shows how busy the box was: other jobs on it make the figures
// noisier, and the A/B ratios are the numbers to trust.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return string(b)
}
