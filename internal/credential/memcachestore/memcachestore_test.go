package memcachestore_test

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/credential"
	"github.com/caddy-wechat/wechat/internal/credential/memcachestore"
	"github.com/caddy-wechat/wechat/internal/credential/storetest"
	"github.com/caddy-wechat/wechat/internal/testserver"
)

// server is a real memcached on a loopback port, restartable on it.
type server struct {
	t    *testing.T
	bin  string
	addr string
	cmd  *exec.Cmd
}

func startServer(t *testing.T) *server {
	bin, err := exec.LookPath("memcached")
	if err != nil {
		if os.Getenv("CI") == "" {
			testserver.Note("memcached", t.Name())
			t.Skipf("memcached not installed: %v", err)
		}
		t.Fatalf("memcached is required in CI: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &server{t: t, bin: bin, addr: addr}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *server) start() {
	_, port, _ := net.SplitHostPort(s.addr)
	args := []string{"-l", "127.0.0.1", "-p", port, "-U", "0", "-m", "16"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root")
	}
	for range 100 {
		cmd := exec.Command(s.bin, args...)
		if err := cmd.Start(); err != nil {
			s.t.Fatal(err)
		}
		for range 100 {
			if s.answers() {
				s.cmd = cmd
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	s.t.Fatalf("memcached did not start on %s", s.addr)
}

func (s *server) answers() bool {
	c, err := net.DialTimeout("tcp", s.addr, 100*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	_, _ = c.Write([]byte("version\r\n"))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.HasPrefix(line, "VERSION")
}

func (s *server) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

func (s *server) signal(sig syscall.Signal) {
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

func TestConformance(t *testing.T) {
	s := startServer(t)
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) credential.Backend {
			b, err := memcachestore.New([]string{s.addr}, 200*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return b
		},
		Pause:   func(*testing.T) { s.signal(syscall.SIGSTOP) },
		Resume:  func(*testing.T) { s.signal(syscall.SIGCONT) },
		Kill:    func(*testing.T) { s.kill() },
		Restart: func(*testing.T) { s.start() },
	})
}

// A counter that holds junk starts again at 1.
func TestIncrOverJunk(t *testing.T) {
	s := startServer(t)
	b, err := memcachestore.New([]string{s.addr}, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	if _, err := b.Add(ctx, "k", []byte("junk"), time.Minute); err != nil {
		t.Fatal(err)
	}
	for want := int64(1); want <= 3; want++ {
		n, err := b.Incr(ctx, "k", time.Minute)
		if err != nil || n != want {
			t.Fatalf("Incr = %d, %v; want %d", n, err, want)
		}
	}
	v, _, err := b.Get(ctx, "k")
	if err != nil || strings.TrimSpace(string(v)) != strconv.Itoa(3) {
		t.Fatalf("Get on a counter = %q, %v", v, err)
	}
}

// DeleteIf is atomic: a write that lands between its read and its delete
// (a lease taken over by a peer, a mark made again) survives, and an
// unchanged value is deleted for good (a later Add succeeds).
func TestDeleteIfIsAtomic(t *testing.T) {
	s := startServer(t)
	open := func() *memcachestore.Backend {
		b, err := memcachestore.New([]string{s.addr}, 200*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	a, peer := open(), open()
	ctx := t.Context()
	if ok, err := a.Add(ctx, "lease", []byte("ours"), time.Minute); !ok || err != nil {
		t.Fatal(ok, err)
	}
	err := a.DeleteIfBetween(ctx, "lease", []byte("ours"), func() {
		// Our lease ran out and a peer took it over just now.
		if err := peer.Delete(ctx, "lease"); err != nil {
			t.Fatal(err)
		}
		if ok, err := peer.Add(ctx, "lease", []byte("peer's"), time.Minute); !ok || err != nil {
			t.Fatal(ok, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, _, err := peer.Get(ctx, "lease"); err != nil || string(v) != "peer's" {
		t.Fatalf("the peer's lease after our DeleteIf: %q, %v; want it kept", v, err)
	}
	// The same value rewritten in between (a new CAS id) is a new write.
	err = peer.DeleteIfBetween(ctx, "lease", []byte("peer's"), func() {
		v, ver, _ := a.Get(ctx, "lease")
		if ok, err := a.CompareAndSwap(ctx, "lease", ver, v, time.Minute); !ok || err != nil {
			t.Fatal(ok, err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Get(ctx, "lease"); err != nil {
		t.Fatalf("a value rewritten between the read and the delete was deleted: %v", err)
	}
	if err := a.DeleteIf(ctx, "lease", []byte("peer's")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Get(ctx, "lease"); err != credential.ErrNotFound {
		t.Fatalf("an unchanged value was not deleted: %v", err)
	}
	if ok, err := a.Add(ctx, "lease", []byte("next"), time.Minute); !ok || err != nil {
		t.Fatalf("Add after DeleteIf: %v %v; want stored", ok, err)
	}
	if err := a.DeleteIf(ctx, "lease", []byte("not this")); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := a.Get(ctx, "lease"); string(v) != "next" {
		t.Fatal("DeleteIf deleted a value it does not hold")
	}
}

// The conformance suite's multi-process case: three processes on one
// memcached, 120 authorizers expiring at once.
func TestAcrossProcesses(t *testing.T) {
	s := startServer(t)
	open := func(t *testing.T) credential.Backend { return openAt(t, s.addr) }
	storetest.Processes(t, storetest.Harness{Open: open}, "TestClusterProcessHelper", []string{procAddrEnv + "=" + s.addr})
}

const procAddrEnv = "WECHAT_CLUSTER_MEMCACHE"

func openAt(t *testing.T, addr string) credential.Backend {
	b, err := memcachestore.New([]string{addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestClusterProcessHelper is one gateway process of TestAcrossProcesses.
func TestClusterProcessHelper(t *testing.T) {
	addr := os.Getenv(procAddrEnv)
	if addr == "" {
		t.Skip("a helper process of TestAcrossProcesses")
	}
	if !storetest.ProcessChild(t, func(t *testing.T) credential.Backend { return openAt(t, addr) }) {
		t.Fatal("started without the cluster environment")
	}
}
