package integration

// A memcache that answers nothing.

import (
	"net"
	"sync"
	"testing"
)

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
