package wechat

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/caddy-wechat/wechat/internal/testserver"
)

// memcachedProc is a real memcached for the root tests: the shared
// launcher in internal/testserver (free loopback port, skip locally and
// fail under CI when the binary is missing), plus FlushAll.
type memcachedProc struct {
	*testserver.Server
	t testing.TB
}

func startMemcached(t testing.TB) *memcachedProc {
	t.Helper()
	skipIfFast(t)
	return &memcachedProc{Server: testserver.Memcached(t), t: t}
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

// FlushAll sends "flush_all" over a raw connection.
func (m *memcachedProc) FlushAll() {
	m.t.Helper()
	c, err := net.DialTimeout("tcp", m.Addr, time.Second)
	if err != nil {
		m.t.Fatalf("flush_all: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("flush_all\r\n")); err != nil {
		m.t.Fatalf("flush_all: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || strings.TrimRight(line, "\r\n") != "OK" {
		m.t.Fatalf("flush_all: %q, %v", line, err)
	}
}
