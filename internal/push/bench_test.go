package push

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRoundTrip is one push end to end in safe mode: verify both
// signatures, decrypt, parse, claim the message in the in-process marks,
// hand it to an app that answers at once, store the reply, encrypt and
// sign it.
func BenchmarkRoundTrip(b *testing.B) {
	f := newFixture(b, nil)
	reply := []byte(replyXML)
	next := func(w http.ResponseWriter, r *http.Request) error {
		io.Copy(io.Discard, r.Body)
		w.Write(reply)
		return nil
	}
	reqs := make([]*http.Request, b.N)
	for i := range reqs {
		reqs[i] = f.request(textXML(itoa(int64(i)), "hello", f.now.Unix()), f.now.Unix(), "n"+itoa(int64(i)))
	}
	w := httptest.NewRecorder()
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := range b.N {
		w.Body.Reset()
		f.g.ServeHTTP(w, reqs[i], next)
	}
	b.StopTimer()
	// On a shared machine ns/op counts the time other jobs ran; the
	// process's own CPU time (GC included) per push does not.
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	if w.Code != 200 || !bytes.HasPrefix(w.Body.Bytes(), []byte("<xml><Encrypt>")) {
		b.Fatalf("%d %s", w.Code, w.Body)
	}
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
