package wechat

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/testserver"
)

// memcachedProc is a real memcached process for tests. It can be killed
// and restarted on the same port mid-test.
type memcachedProc struct {
	t    testing.TB
	bin  string
	port int
	Addr string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	out  *bytes.Buffer
}

// startMemcached starts memcached on a free 127.0.0.1 port and stops it
// when the test ends. Without a memcached binary the test is skipped
// locally but fails in CI.
func startMemcached(t testing.TB) *memcachedProc {
	skipIfFast(t)
	t.Helper()
	bin, err := exec.LookPath("memcached")
	if err != nil {
		if os.Getenv("CI") == "" {
			testserver.Note("memcached", t.Name())
			t.Skipf("memcached not installed: %v", err)
		}
		t.Fatalf("memcached is required in CI: %v", err)
	}
	var lastErr error
	for range 5 {
		m := &memcachedProc{t: t, bin: bin, port: freePort(t)}
		m.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port))
		if lastErr = m.launch(); lastErr == nil {
			t.Cleanup(m.Kill)
			return m
		}
	}
	t.Fatalf("starting memcached: %v", lastErr)
	return nil
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// launch starts the process and waits until it answers "version".
func (m *memcachedProc) launch() error {
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(m.port), "-U", "0", "-m", "16"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root") // memcached refuses to run as root otherwise
	}
	cmd := exec.Command(m.bin, args...)
	out := new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("memcached exited at start: %s", out.String())
		default:
		}
		if line, err := m.send("version"); err == nil && strings.HasPrefix(line, "VERSION") {
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("memcached did not answer on %s: %s", m.Addr, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	m.mu.Lock()
	m.cmd, m.done, m.out = cmd, done, out
	m.mu.Unlock()
	return nil
}

// Kill stops the process (SIGKILL) and waits for it to exit.
func (m *memcachedProc) Kill() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart starts a new, empty memcached on the same port.
func (m *memcachedProc) Restart() {
	m.t.Helper()
	m.Kill()
	var err error
	for range 50 {
		if err = m.launch(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	m.t.Fatalf("restarting memcached on %s: %v", m.Addr, err)
}

// send writes one raw text-protocol command and returns the first line of
// the answer, without its CRLF.
func (m *memcachedProc) send(cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", m.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

// FlushAll sends "flush_all" over a raw connection.
func (m *memcachedProc) FlushAll() {
	m.t.Helper()
	line, err := m.send("flush_all")
	if err != nil || line != "OK" {
		m.t.Fatalf("flush_all: %q, %v", line, err)
	}
}

// blackHole is a TCP listener that accepts connections and never answers:
// a memcache behind a dead firewall rule or a hung server.
type blackHole struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startBlackHole(t testing.TB) *blackHole {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackHole{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
	})
	return b
}

func (b *blackHole) Addr() string { return b.l.Addr().String() }
