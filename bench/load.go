package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"
)

// result is one load run against one target.
type result struct {
	rps      float64
	p50, p99 time.Duration
	requests int64
	errors   int64 // non-2xx, socket errors and timeouts
}

// load runs one bounded burst of keep-alive GETs against url.
type load func(url string, conns int, d time.Duration) result

// wrkLoad drives wrk, which costs the 2-core box far less CPU per request
// than a Go client would, leaving more of it to the servers under test.
func wrkLoad(threads int) load {
	return func(url string, conns int, d time.Duration) result {
		t := min(threads, conns)
		out, err := exec.Command("wrk", "-t", strconv.Itoa(t), "-c", strconv.Itoa(conns),
			"-d", fmt.Sprintf("%.0fs", d.Seconds()), "--latency", url).CombinedOutput()
		if err != nil {
			fatalf("wrk: %v\n%s", err, out)
		}
		return parseWrk(string(out))
	}
}

var (
	reRPS   = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reTotal = regexp.MustCompile(`(\d+) requests in`)
	rePct   = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.0+)?%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	reNon2x = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	reSock  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

func parseWrk(out string) result {
	var r result
	m := reRPS.FindStringSubmatch(out)
	if m == nil {
		fatalf("cannot read wrk output:\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := reTotal.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, m := range rePct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute}[m[3]]
		if m[1] == "50" {
			r.p50 = time.Duration(v * float64(unit))
		} else {
			r.p99 = time.Duration(v * float64(unit))
		}
	}
	if m := reNon2x.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.errors += n
	}
	if m := reSock.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.errors += n
		}
	}
	return r
}

// goLoad is the fallback when wrk is not installed: conns goroutines, each
// with its own keep-alive connection, sending back to back.
func goLoad(url string, conns int, d time.Duration) result {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		lat    []time.Duration
		errs   int64
		start  = time.Now()
		stopAt = start.Add(d)
	)
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1<<14)
			var bad int64
			br := bufio.NewReaderSize(nil, 4096)
			for time.Now().Before(stopAt) {
				t0 := time.Now()
				resp, err := c.Get(url)
				if err != nil {
					bad++
					continue
				}
				br.Reset(resp.Body)
				_, err = io.Copy(io.Discard, br)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat, errs = append(lat, mine...), errs+bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	r := result{requests: int64(len(lat)), errors: errs, rps: float64(len(lat)) / elapsed.Seconds()}
	if n := len(lat); n > 0 {
		r.p50, r.p99 = lat[n*50/100], lat[min(n-1, n*99/100)]
	}
	return r
}

// ms formats a latency in milliseconds.
func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 2, 64)
}

// median of xs (not modified).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
