// Package testserver starts real store servers for tests: memcached,
// redis-server, MariaDB and PostgreSQL, each on a free loopback port
// with its data in a temporary directory, stopped when the test ends.
// Tests can pause (SIGSTOP: a black hole), kill and restart them.
//
// A missing server binary skips the test, loudly, except under CI
// (CI set), where it fails: CI must never pass by testing nothing.
package testserver

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // ready check
	_ "github.com/jackc/pgx/v5/stdlib" // ready check
)

// Server is one running server process and its children.
type Server struct {
	Name string
	Addr string // 127.0.0.1:port
	Dir  string // its data directory
	// DSN connects to the server's test database (SQL servers only).
	DSN string

	launchArgs func() (bin string, args []string)
	ready      func(ctx context.Context) error
	asUser     string // run through runuser as this user

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	out  *lockedWriter
}

// ci reports whether a missing server must fail the test.
func ci() bool { v := os.Getenv("CI"); return v != "" && v != "false" && v != "0" }

// mutationBuild is set under the "mutation" build tag (mutation.go).
var mutationBuild bool

// lookPath finds a server binary, or skips (fails under CI).
func lookPath(t testing.TB, bin, pkg string, dirs ...string) string {
	t.Helper()
	if mutationBuild {
		t.Skip("mutation build: needs a real " + bin)
	}
	if p, err := exec.LookPath(bin); err == nil {
		return p
	}
	for _, d := range dirs {
		if st, err := os.Stat(d + "/" + bin); err == nil && !st.IsDir() {
			return d + "/" + bin
		}
	}
	msg := fmt.Sprintf("testserver: %s NOT INSTALLED: this test needs a real %s (apt-get install %s)", bin, bin, pkg)
	if ci() {
		t.Fatal(msg + "; CI must install it (.ci/run)")
	}
	noteSkip(bin, t.Name())
	t.Skip("SKIPPED: " + msg)
	return ""
}

var skips struct {
	sync.Mutex
	tests map[string][]string // server binary -> skipped tests
}

func noteSkip(bin, test string) {
	skips.Lock()
	defer skips.Unlock()
	if skips.tests == nil {
		skips.tests = map[string][]string{}
	}
	skips.tests[bin] = append(skips.tests[bin], test)
}

// Summary is a loud line naming the tests skipped for want of a server,
// or "" if none were: a TestMain prints it after the run, so that a local
// "ok" that tested nothing is not missed in the scroll-back.
func Summary() string {
	skips.Lock()
	defer skips.Unlock()
	if len(skips.tests) == 0 {
		return ""
	}
	var parts []string
	n := 0
	for bin, tests := range skips.tests {
		parts = append(parts, fmt.Sprintf("%s (%d: %s)", bin, len(tests), strings.Join(tests, ", ")))
		n += len(tests)
	}
	slices.Sort(parts)
	return fmt.Sprintf("!!! SKIPPED %d TESTS: no server binary for %s. Install them or run with CI=1 (then they fail).", n, strings.Join(parts, "; "))
}

// Report is for a TestMain after m.Run: it prints Summary, and appends
// it to the file $WECHAT_SKIP_REPORT, since "go test ./..." shows nothing
// of a package that passes; test.sh prints that file at the end.
func Report() {
	s := Summary()
	if s == "" {
		return
	}
	fmt.Fprintln(os.Stderr, s)
	if p := os.Getenv("WECHAT_SKIP_REPORT"); p != "" {
		if f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintln(f, s)
			f.Close()
		}
	}
}

// Note records a test skipped for want of bin, for Summary; for packages
// that find their server themselves.
func Note(bin, test string) { noteSkip(bin, test) }

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start launches s on a free port (a few tries, in case another process
// took the port in between) and registers its cleanup.
func (s *Server) start(t testing.TB, setPort func(port int)) {
	t.Helper()
	var err error
	for range 5 {
		port := FreePort(t)
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		setPort(port)
		if err = s.launch(); err == nil {
			t.Cleanup(func() { s.Kill(t) })
			return
		}
	}
	t.Fatalf("testserver: starting %s: %v", s.Name, err)
}

// launch starts the process and waits until it answers.
func (s *Server) launch() error {
	bin, args := s.launchArgs()
	if s.asUser != "" {
		args = append([]string{"-u", s.asUser, "--", bin}, args...)
		bin = "runuser"
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.Dir
	cmd.WaitDelay = 2 * time.Second // Wait returns even if a stray child holds the output pipe
	out := new(lockedWriter)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		select {
		case <-done:
			return fmt.Errorf("%s exited at start: %s", s.Name, tail(out))
		default:
		}
		rctx, rcancel := context.WithTimeout(ctx, time.Second)
		err := s.ready(rctx)
		rcancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			signalTree(cmd.Process.Pid, syscall.SIGKILL)
			<-done
			return fmt.Errorf("%s did not answer on %s: %v: %s", s.Name, s.Addr, err, tail(out))
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.mu.Lock()
	s.cmd, s.done, s.out = cmd, done, out
	s.mu.Unlock()
	return nil
}

func (s *Server) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		t.Fatalf("testserver: %s is not running", s.Name)
	}
	signalTree(cmd.Process.Pid, sig)
}

// signalTree signals pid and all its descendants. A process group is not
// enough: PostgreSQL's backends each call setsid. The tree is stopped
// first, root down, so that no process forks or is reparented (and so
// lost from the tree) while it is being signalled.
func signalTree(pid int, sig syscall.Signal) []int {
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	var all []int
	for range 2 { // a second pass for a child forked during the first
		all = descendants(pid)
		for _, c := range all {
			_ = syscall.Kill(c, syscall.SIGSTOP)
		}
	}
	if sig != syscall.SIGSTOP {
		_ = syscall.Kill(pid, sig)
		for _, c := range all {
			_ = syscall.Kill(c, sig)
		}
	}
	return all
}

// descendants lists pid's descendants from /proc.
func descendants(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			parent[p] = pp
		}
	}
	var out []int
	for p := range parent {
		for a := parent[p]; a > 1; a = parent[a] {
			if a == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// Pause stops the server's processes (SIGSTOP): connections are
// accepted by the kernel and never answered, like a black hole.
func (s *Server) Pause(t testing.TB) { s.signal(t, syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume(t testing.TB) { s.signal(t, syscall.SIGCONT) }

// Kill stops the server at once (SIGKILL to its process tree) and waits
// for it: connections to its port are then refused.
func (s *Server) Kill(t testing.TB) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	children := signalTree(cmd.Process.Pid, syscall.SIGKILL)
	<-done
	// The children were reparented when their parent died: wait until
	// they are gone too, so a restart finds the port and the data free.
	for _, c := range children {
		for i := 0; i < 500 && syscall.Kill(c, 0) == nil; i++ {
			if st, err := os.ReadFile("/proc/" + strconv.Itoa(c) + "/stat"); err != nil || bytes.Contains(st, []byte(") Z ")) {
				break // gone, or a zombie waiting for init
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Restart kills the server if it runs and starts it again on the same
// address with the same data directory.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill(t)
	var err error
	for range 50 {
		if err = s.launch(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("testserver: restarting %s on %s: %v", s.Name, s.Addr, err)
}

// Output is what the server printed so far, for failure messages.
func (s *Server) Output() string {
	s.mu.Lock()
	out := s.out
	s.mu.Unlock()
	if out == nil {
		return ""
	}
	return tail(out)
}

// lockedWriter is the process's stdout and stderr, read by Output
// while the process writes.
type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func tail(l *lockedWriter) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.b.String()
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

// Memcached starts memcached (not durable: Restart empties it).
func Memcached(t testing.TB) *Server {
	t.Helper()
	bin := lookPath(t, "memcached", "memcached")
	s := &Server{Name: "memcached", Dir: t.TempDir()}
	var port int
	s.launchArgs = func() (string, []string) {
		args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "16"}
		if os.Geteuid() == 0 {
			args = append(args, "-u", "root") // memcached refuses root otherwise
		}
		return bin, args
	}
	s.ready = func(ctx context.Context) error {
		line, err := roundTrip(ctx, s.Addr, "version\r\n")
		if err == nil && !strings.HasPrefix(line, "VERSION") {
			err = fmt.Errorf("answer %q", line)
		}
		return err
	}
	s.start(t, func(p int) { port = p })
	return s
}

// Redis starts redis-server without persistence (not durable: Restart
// empties it).
func Redis(t testing.TB) *Server {
	t.Helper()
	bin := lookPath(t, "redis-server", "redis-server")
	s := &Server{Name: "redis-server", Dir: t.TempDir()}
	var port int
	s.launchArgs = func() (string, []string) {
		return bin, []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", s.Dir, "--protected-mode", "no",
			"--unixsocket", "", "--daemonize", "no", "--loglevel", "warning"}
	}
	s.ready = func(ctx context.Context) error {
		line, err := roundTrip(ctx, s.Addr, "PING\r\n")
		if err == nil && line != "+PONG" {
			err = fmt.Errorf("answer %q", line)
		}
		return err
	}
	s.start(t, func(p int) { port = p })
	return s
}

// roundTrip sends one line and reads one line.
func roundTrip(ctx context.Context, addr, req string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte(req)); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

// pingSQL opens, pings and closes a connection.
func pingSQL(ctx context.Context, driver, dsn string, stmts ...string) error {
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		return err
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}
