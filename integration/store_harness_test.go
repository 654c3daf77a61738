package integration

// The store tests' view of an account: its row of /wechat/status (what
// an operator sees), and a memcache that answers nothing.

import (
	"encoding/json"
	"net"
	"sync"
	"testing"
)

// accountRow is the part of a /wechat/status row the store tests read.
type accountRow struct {
	Account        string `json:"account"`
	Shared         bool   `json:"store"`
	HasToken       bool   `json:"has_token"`
	Fetches        int64  `json:"fetches_today"`
	CeilingReached bool   `json:"ceiling_reached"`
	StoreDown      bool   `json:"store_down"`
}

// onlyAccountRow is the status row of the one account g runs.
func onlyAccountRow(t testing.TB, g *runningCaddy) accountRow {
	t.Helper()
	r := get(t, "http://"+g.Admin+"/wechat/status")
	var s struct {
		Accounts []accountRow `json:"accounts"`
	}
	if err := json.Unmarshal(r.Body, &s); err != nil {
		t.Fatalf("status: %v %s", err, r.Body)
	}
	if len(s.Accounts) != 1 {
		t.Fatalf("%d accounts in the status, want 1: %s", len(s.Accounts), r.Body)
	}
	return s.Accounts[0]
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
