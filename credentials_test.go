package wechat

import (
	"net"
	"sync"
	"sync/atomic"
)

// --- 3. upstream faults ---

// rawFront is a raw TCP listener in front of the fake. In "forward" mode it
// splices connections to the fake; in "hang" mode it accepts, reads, and
// never answers.
type rawFront struct {
	ln     net.Listener
	target string
	hang   atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]bool
}
