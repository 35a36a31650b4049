package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"
	gnerrors "github.com/panjf2000/gnet/v2/pkg/errors"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/testkit"
	"golang.org/x/sys/unix"
)

// A server that answers every connection but two: the first stays silent
// (its ping is never answered) and the second is reset after its first
// pong. Both clients, goroutine and event loop, count one timeout, at the
// configured timeout (neither early nor late), and one reset, and go on
// with the others.
func TestPongTimeoutAndReset(t *testing.T) {
	for _, mode := range []string{"goroutines", "loop", "gnet"} {
		t.Run(mode, func(t *testing.T) { pongTimeoutAndReset(t, mode) })
	}
}

func pongTimeoutAndReset(t *testing.T, mode string) {
	fds := leakcheck.FDs(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const timeout = 300 * time.Millisecond
	var mu sync.Mutex
	var silentPing, silentGone time.Time
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := br.ReadString('\n'); err != nil {
						if i == 0 {
							mu.Lock()
							silentGone = time.Now()
							mu.Unlock()
						}
						return
					}
					switch i {
					case 0:
						mu.Lock()
						if silentPing.IsZero() {
							silentPing = time.Now()
						}
						mu.Unlock()
						continue
					case 1:
						c.Write(pong)
						c.(*net.TCPConn).SetLinger(0)
						return
					}
					c.Write(pong)
				}
			})
		}
	})

	d, err := client.NewDialer(client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	o := clientOpts{server: ln.Addr().String(), conns: 5, rate: 1000, interval: 100 * time.Millisecond, timeout: timeout}
	s := &clientStats{reasons: map[string]uint64{}}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	switch mode {
	case "loop", "gnet":
		run := runLoopClient
		if mode == "gnet" {
			run = runGnetClient
		}
		if err := run(ctx, d, o, s, make(chan struct{})); err != nil {
			t.Fatal(err)
		}
	default:
		var cw sync.WaitGroup
		for range o.conns {
			cw.Go(func() { pinger(ctx, d, o, s) })
		}
		cw.Wait()
	}
	ln.Close()

	if s.established.Load() != 5 || s.timeouts.Load() != 1 || s.failed.Load() != 2 || s.open.Load() != 0 {
		t.Fatalf("established %d, timeouts %d, failed %d %v, open %d", s.established.Load(), s.timeouts.Load(), s.failed.Load(), s.reasons, s.open.Load())
	}
	var reset bool
	for r := range s.reasons {
		// Read first (reset, EOF) or written to first (broken pipe).
		reset = reset || strings.Contains(r, "reset") || strings.Contains(r, "EOF") || strings.Contains(r, "broken pipe")
	}
	if s.reasons["pong: timeout"] != 1 || !reset {
		t.Fatalf("reasons %v", s.reasons)
	}
	if s.pongs.Load() < 3*5 {
		t.Fatalf("%d pongs from the three healthy connections in 1.5 s at 100 ms", s.pongs.Load())
	}
	testkit.Eventually(t, "the silent connection closed", func() bool { mu.Lock(); defer mu.Unlock(); return !silentGone.IsZero() })
	mu.Lock()
	took := silentGone.Sub(silentPing)
	mu.Unlock()
	// Both ends are seen from the server: its read of the ping may come a
	// little after the client's clock started (hence 10 ms of slack below).
	if took < timeout-10*time.Millisecond || took > timeout+200*time.Millisecond {
		t.Fatalf("the unanswered connection was dropped %v after its ping, want %v (-10 ms, +200 ms)", took, timeout)
	}
	d.Close()
	ln.Close()
	leakcheck.Settle(t, fds, -1)
}

// takeOver takes a dialed connection's descriptor out of the runtime's
// poller (the runtime's epoll instance lists it before, not after), the
// loop can use it, and closing the Conn afterwards (the runtime then
// removes a descriptor its epoll no longer has) neither fails nor leaks.
func TestTakeOverLeavesTheRuntimePoller(t *testing.T) {
	fds := leakcheck.FDs(t)
	ln, d := pingServer(t)
	c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rt, err := runtimeEpoll()
	if err != nil {
		t.Fatal(err)
	}
	fd := testkit.FD(t, c)
	registered := func() bool {
		info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", rt))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(string(info), fmt.Sprintf("tfd: %8d ", fd))
	}
	if !registered() {
		t.Fatalf("descriptor %d is not in the runtime's epoll (%d) before takeOver", fd, rt)
	}
	got, err := takeOver(c)
	if err != nil || got != fd {
		t.Fatalf("takeOver = %d, %v; want %d", got, err, fd)
	}
	if registered() {
		t.Fatalf("descriptor %d is still in the runtime's epoll after takeOver", fd)
	}
	if _, err := unix.Write(fd, ping); err != nil {
		t.Fatal(err)
	}
	unix.SetNonblock(fd, false)
	buf := make([]byte, len(pong))
	if n, err := unix.Read(fd, buf); err != nil || string(buf[:n]) != string(pong) {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close after takeOver: %v", err)
	}
	d.Close()
	ln.Close()
	leakcheck.Settle(t, fds, -1)
}

// Why -gnet enrolls a duplicate: gnet's Client.Enroll refuses connopt's
// dialed Conn (it takes only *net.TCPConn, *net.UnixConn, *net.UDPConn),
// and closes it even then; enroll's *net.TCPConn from a duplicate is
// taken, and the dialed Conn stays open for its lease.
func TestGnetEnrollNeedsTCPConn(t *testing.T) {
	ln, d := pingServer(t)
	g := &gnetClient{o: clientOpts{interval: time.Hour, timeout: time.Second}, s: &clientStats{reasons: map[string]uint64{}},
		conns: map[gnet.Conn]*gnetConn{}, byLoop: map[*loopConn]*gnetConn{}}
	cli, err := gnet.NewClient(g, gnet.WithTicker(true), gnet.WithLogLevel(4))
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Start(); err != nil {
		t.Fatal(err)
	}
	defer cli.Stop()

	c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Enroll(c); !errors.Is(err, gnerrors.ErrUnsupportedProtocol) {
		t.Fatalf("Enroll(%T) = %v, want %v", c, err, gnerrors.ErrUnsupportedProtocol)
	}
	if _, err := c.Write(ping); err == nil {
		t.Fatal("the refused Conn is still open")
	}

	c, err = d.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.enroll(cli, c); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "gnet opened the enrolled connection", func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.conns) == 1 })
	g.mu.Lock()
	var gc *gnetConn
	for _, v := range g.conns {
		gc = v
	}
	g.mu.Unlock()
	if gc.conn != c || gc.fd == testkit.FD(t, c) {
		t.Fatalf("gnet's descriptor %d, the dialed Conn's %d: want the Conn kept and a descriptor of gnet's own", gc.fd, testkit.FD(t, c))
	}
	// The dialed Conn is open (its lease with it): it still writes.
	if _, err := unix.Write(testkit.FD(t, c), ping); err != nil {
		t.Fatalf("the kept Conn: %v", err)
	}
}

// Neither client makes garbage per ping (the hold's RSS is then the
// collector's headroom filling with the reports' garbage, not the pings'):
// fewer than 0.1 allocations per ping, in this process, with a server
// answering at once.
func TestAllocsPerPing(t *testing.T) {
	for _, mode := range []string{"goroutines", "loop"} {
		t.Run(mode, func(t *testing.T) {
			ln, d := pingServer(t)
			o := clientOpts{server: ln.Addr().String(), conns: 20, rate: 1000, interval: 5 * time.Millisecond, timeout: time.Second}
			s := &clientStats{reasons: map[string]uint64{}}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			if mode == "loop" {
				wg.Go(func() { runLoopClient(ctx, d, o, s, make(chan struct{})) })
			} else {
				for range o.conns {
					wg.Go(func() { pinger(ctx, d, o, s) })
				}
			}
			testkit.Eventually(t, "pings under way", func() bool { return s.pongs.Load() > 200 })
			var m1, m2 runtime.MemStats
			runtime.ReadMemStats(&m1)
			p1 := s.pongs.Load()
			time.Sleep(500 * time.Millisecond)
			runtime.ReadMemStats(&m2)
			p2 := s.pongs.Load()
			cancel()
			wg.Wait()
			if p2-p1 < 500 || s.failed.Load() != 0 {
				t.Fatalf("%d pongs in 500 ms, %d failed %v", p2-p1, s.failed.Load(), s.reasons)
			}
			per := float64(m2.Mallocs-m1.Mallocs) / float64(p2-p1)
			t.Logf("%d pongs, %.3f allocations per ping", p2-p1, per)
			if per >= 0.1 {
				t.Fatalf("%.3f allocations per ping", per)
			}
		})
	}
}

// pingServer is a loopback listener answering pings on every connection
// (servePings) and a connopt Dialer, both closed when the test ends.
func pingServer(t *testing.T) (net.Listener, *client.Dialer) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); servePings(c, new(atomic.Uint64)) }()
		}
	}()
	d, err := client.NewDialer(client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return ln, d
}
