package integration

// The hardening tests' raw tools (the root's hardening helpers): a host
// the gateway must never reach, requests written raw on a TCP connection,
// a get that reports a transport error instead of failing, and a site
// that answers every Host.

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// evilListener stands in for a host the gateway must never talk to: it
// counts every connection it accepts and answers nothing.
type evilListener struct {
	ln       net.Listener
	accepted atomic.Int32
}

func newEvil(t *testing.T) *evilListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &evilListener{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return e
}

func (e *evilListener) addr() string { return e.ln.Addr().String() }

// rawResult is an answer to a request written raw on a TCP connection.
type rawResult struct {
	Status int
	Header http.Header
	Body   string
	Err    error // no parseable answer, or the body broke off
}

// rawDo writes raw to addr on a fresh connection and reads one response.
func rawDo(addr, raw string) rawResult {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return rawResult{Err: err}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		return rawResult{Err: err}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return rawResult{Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return rawResult{Status: resp.StatusCode, Header: resp.Header, Body: string(b), Err: err}
}

// anyHost is basicConfig for a site that answers every Host, so a hostile
// Host header or absolute-form URI reaches the wechat handler.
func anyHost(upstream, extra string) string {
	return strings.Replace(basicConfig(upstream, extra), "http://127.0.0.1:%[1]d {", "http://:%[1]d {\n\tbind 127.0.0.1", 1)
}
