// Package testkit holds the helpers connopt's tests share, so that each is
// written once: loggers for fasthttp servers under test, a connected pair
// from any listener and dialer, and reading a socket's options back.
package testkit

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// Quiet is a fasthttp.Logger that drops everything: for tests that provoke
// the errors fasthttp would log.
type Quiet struct{}

func (Quiet) Printf(string, ...any) {}

// Logger is a fasthttp.Logger that writes into the test's log.
type Logger struct{ T testing.TB }

func (l Logger) Printf(format string, args ...any) { l.T.Logf("fasthttp: "+format, args...) }

// Pair dials ln with dial and accepts the connection. The client sends one
// byte, which the server side has read when Pair returns, so that a
// listener with TCP_DEFER_ACCEPT hands the connection over at once; the
// stream is clean after it.
func Pair(ln net.Listener, dial func(addr string) (net.Conn, error)) (client, server net.Conn, err error) {
	client, err = dial(ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	if _, err := client.Write([]byte{'x'}); err != nil {
		client.Close()
		return nil, nil, err
	}
	server, err = ln.Accept()
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(server, b); err != nil || b[0] != 'x' {
		client.Close()
		server.Close()
		return nil, nil, fmt.Errorf("first byte %q: %v", b, err)
	}
	return client, server, nil
}

// MakePipe is a nettest.MakePipe over ln and dial, for the net.Conn
// conformance suite (nettest.TestConn).
func MakePipe(ln net.Listener, dial func(addr string) (net.Conn, error)) nettest.MakePipe {
	return func() (c1, c2 net.Conn, stop func(), err error) {
		c1, c2, err = Pair(ln, dial)
		if err != nil {
			return nil, nil, nil, err
		}
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	}
}

// Sink accepts connections on a listener and holds them until CloseAll or
// Close, so that a test or a harness can fill a port range against it.
type Sink struct {
	ln    net.Listener
	done  chan struct{}
	mu    sync.Mutex
	conns []net.Conn
}

// NewSink starts accepting on ln.
func NewSink(ln net.Listener) *Sink {
	s := &Sink{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	}()
	return s
}

// Addr is the listener's address, as a string.
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Count is how many connections are held now.
func (s *Sink) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// CloseAll closes the connections accepted so far, the accepting side
// first, so the dialing side reads EOF and does not end in TIME_WAIT.
func (s *Sink) CloseAll() {
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
}

// Close stops accepting, waits for the accept loop, and closes everything.
func (s *Sink) Close() {
	s.ln.Close()
	<-s.done
	s.CloseAll()
}

// CloseEach accepts connections on ln and closes each at once, until ln is
// closed: an upstream that closes first, for dials that are made and
// dropped. Run it in its own goroutine.
func CloseEach(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// Returns waits up to d for what done delivers (a Serve or Run returning)
// and reports a non-nil error or a timeout as an error of the test, naming
// what.
func Returns(t testing.TB, done <-chan error, d time.Duration, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(d):
		t.Errorf("%s did not return within %v", what, d)
	}
}

// Eventually polls cond until it holds, for up to five seconds (sockets
// close and goroutines exit asynchronously), and fails the test naming
// what it waited for if it never does.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, 5*time.Second, what, cond)
}

// EventuallyWithin is Eventually with a wait of d: for what starts
// processes, say.
func EventuallyWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Get makes one GET with net/http (keep-alive off, 10 s timeout) and
// returns the status and body; an error fails the test.
func Get(t testing.TB, url string) (status int, body string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// FD is c's descriptor (c must be a syscall.Conn), read through
// SyscallConn's Control.
func FD(t testing.TB, c any) int {
	t.Helper()
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatalf("%T has no descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		t.Fatal(err)
	}
	return fd
}
