package ports

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/rawsock"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/internal/testns"
)

// Socket tests run in a network namespace of their own, so no other socket
// on the machine takes ports from their ranges and the system range can be
// set: IP_LOCAL_PORT_RANGE only narrows within it. Destinations listen on
// fixed ports below it.
const nsPortRange = "40000 49999"

var (
	plainRange   = Range{40000, 40199}
	trackedRange = Range{40200, 40399}
	kernelRange  = Range{40400, 40599}
)

// inNS runs fn inside a fresh namespace (skipping without root).
func inNS(t *testing.T, fn func()) {
	t.Helper()
	testns.New(t, map[string]string{"net.ipv4.ip_local_port_range": nsPortRange}).Do(t, fn)
}

func newT(t *testing.T, cfg Config) *Allocator {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// fakeClock is the aging clock of an Allocator made by newClocked: time
// moves only when the test says so.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() int64              { return c.ns.Load() }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// newClocked is newT with a clock the test moves.
func newClocked(t *testing.T, cfg Config) (*Allocator, *fakeClock) {
	t.Helper()
	c := &fakeClock{}
	e := osEnv
	e.now = c.now
	a, err := newAllocator(cfg, e)
	if err != nil {
		t.Fatal(err)
	}
	return a, c
}

// newSink accepts and holds connections on addr until the test ends.
func newSink(t *testing.T, addr string) *testkit.Sink {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := testkit.NewSink(ln)
	t.Cleanup(s.Close)
	return s
}

func closeConns(cs []net.Conn) {
	for _, c := range cs {
		c.(interface{ SetLinger(int) error }).SetLinger(0) // RST: leave no TIME_WAIT behind
		c.Close()
	}
}

// fill dials round-robin over dsts until a dial fails or max connections
// are open.
func fill(dial func(string) (net.Conn, error), dsts []string, max int) ([]net.Conn, error) {
	var conns []net.Conn
	for i := 0; i < max; i++ {
		c, err := dial(dsts[i%len(dsts)])
		if err != nil {
			return conns, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func sinks(t *testing.T, n int) ([]string, []*testkit.Sink) {
	var dsts []string
	var ss []*testkit.Sink
	for i := range n {
		s := newSink(t, fmt.Sprintf("127.0.0.1:%d", 5001+i))
		dsts = append(dsts, s.Addr())
		ss = append(ss, s)
	}
	return dsts, ss
}

// 200 ports and 4 destinations: the Tracked strategy holds 800 connections
// from one source IP; bind(ip, 0) before connect, confined to 200 ports the
// same way, stops at 200.
func TestTrackedHoldsRangePerDestination(t *testing.T) {
	inNS(t, func() {
		dsts, ss := sinks(t, 4)
		fds := leakcheck.FDs(t)

		// Plain bind-before-connect, as net.Dialer{LocalAddr} and fasthttp's
		// TCPDialer.LocalAddr do it; IP_LOCAL_PORT_RANGE confines the kernel's
		// choice to 200 ports without touching the host's sysctl.
		plain := net.Dialer{
			LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)},
			Control: func(_, _ string, c syscall.RawConn) error {
				return rawsock.Control(c, func(fd int) error {
					return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_LOCAL_PORT_RANGE, int(plainRange.Low)|int(plainRange.High)<<16)
				})
			},
		}
		pc, err := fill(func(addr string) (net.Conn, error) { return plain.Dial("tcp4", addr) }, dsts, 1000)
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("plain bind(ip,0): stopped with %v, want EADDRINUSE", err)
		}
		if len(pc) > 200 || len(pc) < 190 {
			t.Fatalf("plain bind(ip,0) held %d connections with 200 ports; want about 200", len(pc))
		}
		t.Logf("bind(ip,0)+connect: %d connections, then %v", len(pc), err)
		closeConns(pc)

		a := newT(t, Config{Range: trackedRange, Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
		tc, err := fill(a.Dial4, dsts, 800)
		if err != nil {
			t.Fatalf("tracked: %d connections, then %v", len(tc), err)
		}
		for _, c := range tc {
			p := c.LocalAddr().(*net.TCPAddr).Port
			if p < int(trackedRange.Low) || p > int(trackedRange.High) {
				t.Fatalf("local port %d outside %v", p, trackedRange)
			}
		}
		if _, err := a.Dial4(dsts[0]); !errors.Is(err, ErrExhausted) {
			t.Fatalf("801st dial: %v, want ErrExhausted", err)
		}
		// Every pool full: the busiest holds the whole range.
		if s := a.Stats(); s.InUse != 800 || s.Exhausted != 1 || s.RangeSize != 200 || s.Busiest != 200 {
			t.Fatalf("stats %+v", s)
		}
		closeConns(tc)
		if s := a.Stats(); s.InUse != 0 {
			t.Fatalf("in use after closing everything: %d", s.InUse)
		}
		for _, s := range ss {
			s.CloseAll()
		}
		leakcheck.Settle(t, fds, -1)
	})
}

// Dial4 is a test helper: Dial over tcp4.
func (a *Allocator) Dial4(addr string) (net.Conn, error) { return a.Dial("tcp4", addr) }

func TestTwoSourcesDouble(t *testing.T) {
	inNS(t, func() {
		dsts, _ := sinks(t, 4)
		a := newT(t, Config{Range: trackedRange, Sources: []netip.Addr{
			netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}})
		cs, err := fill(a.Dial4, dsts, 1600)
		defer closeConns(cs)
		if err != nil {
			t.Fatalf("two sources: %d connections, then %v", len(cs), err)
		}
		bySrc := map[string]int{}
		for _, c := range cs {
			bySrc[c.LocalAddr().(*net.TCPAddr).IP.String()]++
		}
		if bySrc["127.0.0.1"] != 800 || bySrc["127.0.0.2"] != 800 {
			t.Fatalf("connections by source: %v", bySrc)
		}
		if _, err := a.Dial4(dsts[1]); !errors.Is(err, ErrExhausted) {
			t.Fatalf("1601st dial: %v, want ErrExhausted", err)
		}
	})
}

func TestKernelStrategy(t *testing.T) {
	inNS(t, func() {
		a, err := New(Config{Strategy: Kernel, Range: kernelRange, Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
		if errors.Is(err, ErrKernelUnsupported) {
			t.Skipf("kernel lacks the options: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		dsts, _ := sinks(t, 4)
		cs, err := fill(a.Dial4, dsts, 800)
		defer closeConns(cs)
		if err != nil {
			t.Fatalf("kernel: %d connections, then %v", len(cs), err)
		}
		for _, c := range cs {
			p := c.LocalAddr().(*net.TCPAddr).Port
			if p < int(kernelRange.Low) || p > int(kernelRange.High) {
				t.Fatalf("local port %d outside %v", p, kernelRange)
			}
		}
		if _, err := a.Dial4(dsts[2]); !errors.Is(err, ErrExhausted) || !errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Fatalf("801st dial: %v, want ErrExhausted from EADDRNOTAVAIL", err)
		}
	})
}

// A port held by a socket outside the allocator is retried on another port.
func TestCollisionRetried(t *testing.T) {
	inNS(t, func() {
		dst := newSink(t, "127.0.0.1:5000").Addr()
		x := trackedRange.Low
		holder, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", x))
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Close()

		// Three ports, one taken: whichever order the pool tries them in, two
		// dials succeed, one collision is seen, and the third dial finds the
		// range exhausted (the collided port is aging).
		a := newT(t, Config{Range: Range{x, x + 2}, Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
		var cs []net.Conn
		defer func() { closeConns(cs) }()
		for range 2 {
			c, err := a.Dial4(dst)
			if err != nil {
				t.Fatal(err)
			}
			if p := c.LocalAddr().(*net.TCPAddr).Port; p == int(x) {
				t.Fatalf("got the held port %d", p)
			}
			cs = append(cs, c)
		}
		if _, err := a.Dial4(dst); !errors.Is(err, ErrExhausted) {
			t.Fatalf("third dial: %v, want ErrExhausted", err)
		}
		if s := a.Stats(); s.Collisions != 1 || s.InUse != 2 {
			t.Fatalf("stats %+v, want 1 collision and 2 in use", s)
		}
	})
}

func TestCollisionAttemptsExhausted(t *testing.T) {
	inNS(t, func() {
		dst := newSink(t, "127.0.0.1:5000").Addr()
		x := trackedRange.Low + 10
		for p := x; p < x+3; p++ {
			h, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
		}
		a := newT(t, Config{Range: Range{x, x + 9}, Attempts: 2, Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
		// Fill the free ports first so only held ones remain.
		var cs []net.Conn
		defer func() { closeConns(cs) }()
		for {
			c, err := a.Dial4(dst)
			if err != nil {
				if !errors.Is(err, ErrCollisions) && !errors.Is(err, ErrExhausted) {
					t.Fatalf("dial: %v", err)
				}
				if errors.Is(err, ErrCollisions) {
					if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "2 ports tried") {
						t.Fatalf("error does not say what happened: %v", err)
					}
					return
				}
				t.Fatalf("exhausted before the attempts ran out: %v (stats %+v)", err, a.Stats())
			}
			cs = append(cs, c)
			if len(cs) > 7 {
				t.Fatalf("more connections than free ports: %d", len(cs))
			}
		}
	})
}

// A port we closed ages; one the peer closed is reusable at once.
func TestAging(t *testing.T) {
	inNS(t, func() {
		s := newSink(t, "127.0.0.1:5000")
		a, clock := newClocked(t, Config{Range: Range{trackedRange.Low + 50, trackedRange.Low + 50}, Aging: 400 * time.Millisecond,
			Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})

		// Peer closes first: the client reads EOF, closes, the port is free.
		c, err := a.Dial4(s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		waitAccepted(t, s, 1)
		s.CloseAll()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read: %v, want EOF", err)
		}
		c.Close()
		c.Close() // twice: a no-op
		if st := a.Stats(); st.Aging != 0 || st.InUse != 0 {
			t.Fatalf("after peer close: %+v", st)
		}

		// We close first: the port ages.
		c, err = a.Dial4(s.Addr())
		if err != nil {
			t.Fatalf("port not reusable after the peer closed: %v", err)
		}
		c.Close()
		if st := a.Stats(); st.Aging != 1 {
			t.Fatalf("after local close: %+v, want 1 aging", st)
		}
		if _, err := a.Dial4(s.Addr()); !errors.Is(err, ErrExhausted) {
			t.Fatalf("dial during aging: %v, want ErrExhausted", err)
		}
		clock.advance(399 * time.Millisecond)
		if st := a.Stats(); st.Aging != 1 {
			t.Fatalf("1 ms before the aging period ends: %+v", st)
		}
		clock.advance(time.Millisecond)
		if st := a.Stats(); st.Aging != 0 {
			t.Fatalf("after the aging period: %+v", st)
		}
		// The port is ours to hand out again (whether the kernel lets the
		// same 4-tuple connect while its TIME_WAIT lasts is
		// tcp_tw_reuse's business, which the default Aging covers).
		l, err := a.Acquire(netip.MustParseAddrPort(s.Addr()))
		if err != nil || l.Source().Port() != trackedRange.Low+50 {
			t.Fatalf("after aging: %v, %v", l, err)
		}
		l.Release(PeerClose)
	})
}

func waitAccepted(t *testing.T, s *testkit.Sink, n int) {
	t.Helper()
	testkit.Eventually(t, fmt.Sprintf("%d connections accepted", n), func() bool { return s.Count() >= n })
}

func TestAcquirePerDestinationAndRelease(t *testing.T) {
	a := newT(t, Config{Range: Range{40000, 40009}, Aging: time.Hour})
	d1 := netip.MustParseAddrPort("198.18.0.1:80")
	d2 := netip.MustParseAddrPort("198.18.0.2:80")
	var ls []*Lease
	seen := map[uint16]bool{}
	for range 10 {
		l, err := a.Acquire(d1)
		if err != nil {
			t.Fatal(err)
		}
		if seen[l.Source().Port()] {
			t.Fatalf("port %d leased twice", l.Source().Port())
		}
		seen[l.Source().Port()] = true
		ls = append(ls, l)
	}
	if _, err := a.Acquire(d1); !errors.Is(err, ErrExhausted) {
		t.Fatalf("11th lease: %v", err)
	}
	if _, err := a.Acquire(d2); err != nil {
		t.Fatalf("another destination: %v", err)
	}
	ls[0].Release(PeerClose)
	ls[0].Release(PeerClose)  // no-op
	ls[0].Release(LocalClose) // no-op
	l, err := a.Acquire(d1)
	if err != nil || l.Source().Port() != ls[0].Source().Port() {
		t.Fatalf("after release: %v, %v", l, err)
	}
	if _, err := a.Acquire(d1); !errors.Is(err, ErrExhausted) {
		t.Fatalf("double release made a second copy of a port: %v", err)
	}
	ls[1].Release(LocalClose)
	if _, err := a.Acquire(d1); !errors.Is(err, ErrExhausted) {
		t.Fatalf("aging port handed out: %v", err)
	}
	if s := a.Stats(); s.InUse != 10 || s.Aging != 1 || s.Pools != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestBadInput(t *testing.T) {
	inNS(t, func() {
		for _, cfg := range []Config{
			{Range: Range{2000, 1000}},
			{Range: Range{0, 10}},
			{Sources: []netip.Addr{{}}},
			{Strategy: Strategy(9)},
		} {
			if _, err := New(cfg); err == nil {
				t.Errorf("New(%+v) accepted", cfg)
			}
		}
		a := newT(t, Config{Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
		if _, err := a.Acquire(netip.MustParseAddrPort("[::1]:80")); !errors.Is(err, ErrNoSource) {
			t.Errorf("IPv6 destination with only IPv4 sources: %v", err)
		}
		if _, err := a.Acquire(netip.AddrPort{}); err == nil {
			t.Error("invalid remote accepted")
		}
		for _, addr := range []string{"localhost:80", "127.0.0.1", "[::1]:80"} {
			if _, err := a.Dial("tcp4", addr); err == nil {
				t.Errorf("Dial(tcp4, %q) accepted", addr)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := a.DialContext(ctx, "tcp", "127.0.0.1:9"); err == nil {
			t.Error("dial with a cancelled context succeeded")
		}
		if s := a.Stats(); s.InUse != 0 {
			t.Errorf("failed dials left %d leases", s.InUse)
		}
		// Refused: the lease comes back at once.
		ln, _ := net.Listen("tcp4", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		if _, err := a.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial to a closed port: %v", err)
		}
		if s := a.Stats(); s.InUse != 0 || s.Aging != 0 {
			t.Errorf("refused dial left %+v", s)
		}
	})
}

// 64 goroutines acquire and release concurrently; no port is ever leased
// twice at once for the same destination.
func TestConcurrentAcquire(t *testing.T) {
	a, clock := newClocked(t, Config{Range: Range{40000, 40049}, Aging: time.Millisecond})
	dsts := []netip.AddrPort{
		netip.MustParseAddrPort("198.18.0.1:80"), netip.MustParseAddrPort("198.18.0.2:80"),
		netip.MustParseAddrPort("198.18.0.3:443"), netip.MustParseAddrPort("198.18.0.4:443"),
	}
	var mu sync.Mutex
	held := map[netip.AddrPort]map[uint16]bool{}
	for _, d := range dsts {
		held[d] = map[uint16]bool{}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				d := dsts[(g+i)%len(dsts)]
				l, err := a.Acquire(d)
				if errors.Is(err, ErrExhausted) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				p := l.Source().Port()
				mu.Lock()
				dup := held[d][p]
				held[d][p] = true
				mu.Unlock()
				if dup {
					errs <- fmt.Errorf("port %d leased twice for %v", p, d)
					return
				}
				mu.Lock()
				delete(held[d], p)
				mu.Unlock()
				l.Release(CloseSide(i % 2))
				clock.advance(time.Millisecond / 4)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if s := a.Stats(); s.InUse != 0 {
		t.Fatalf("in use after all released: %d", s.InUse)
	}
	clock.advance(time.Millisecond)
	if s := a.Stats(); s.Aging != 0 || s.Pools != 0 {
		t.Fatalf("stats after aging: %+v, want no pool left", s)
	}
}

func TestSystemRangeDefault(t *testing.T) {
	inNS(t, func() {
		// The namespace's range, not the host's, with its reserved ports
		// left out.
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_local_reserved_ports", []byte("40000-40009,40011"), 0); err != nil {
			t.Fatal(err)
		}
		a := newT(t, Config{})
		if want, _ := parseRange(nsPortRange); a.Range() != want {
			t.Fatalf("default range %v, namespace's %v", a.Range(), want)
		}
		if len(a.ports) != 10000-11 || a.ports[0] != 40010 || a.ports[1] != 40012 {
			t.Fatalf("usable ports: %d, starting %v", len(a.ports), a.ports[:2])
		}
	})
}

func TestIPv6(t *testing.T) {
	inNS(t, func() {
		ln, err := net.Listen("tcp6", "[::1]:5001")
		if err != nil {
			t.Skipf("no IPv6 loopback in the namespace: %v", err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		for _, st := range []Strategy{Tracked, Kernel} {
			a := newT(t, Config{Strategy: st, Range: Range{40000, 40009}, Sources: []netip.Addr{netip.MustParseAddr("::1")}})
			var cs []net.Conn
			for range 10 {
				c, err := a.Dial("tcp6", ln.Addr().String())
				if err != nil {
					t.Fatalf("%v: %v", st, err)
				}
				if p := c.LocalAddr().(*net.TCPAddr).Port; p < 40000 || p > 40009 {
					t.Fatalf("%v: local port %d outside the range", st, p)
				}
				cs = append(cs, c)
			}
			if _, err := a.Dial("tcp6", ln.Addr().String()); !errors.Is(err, ErrExhausted) {
				t.Fatalf("%v: 11th dial: %v", st, err)
			}
			closeConns(cs)
		}
	})
}

func TestCollector(t *testing.T) {
	a := newT(t, Config{Range: Range{40000, 40001}, Aging: time.Hour})
	d := netip.MustParseAddrPort("198.18.0.1:80")
	l1, _ := a.Acquire(d)
	a.Acquire(d)
	a.Acquire(d) // exhausted
	l1.Release(LocalClose)
	want := `
# HELP connopt_ports_aging Ports our side closed, waiting out the aging period before reuse.
# TYPE connopt_ports_aging gauge
connopt_ports_aging{strategy="tracked"} 1
# HELP connopt_ports_exhausted_total Lease requests that found every source address and port for the destination in use or aging.
# TYPE connopt_ports_exhausted_total counter
connopt_ports_exhausted_total{strategy="tracked"} 1
# HELP connopt_ports_leases_in_use Source-port leases held by open or opening connections.
# TYPE connopt_ports_leases_in_use gauge
connopt_ports_leases_in_use{strategy="tracked"} 1
# HELP connopt_ports_leases_total Source-port leases handed out.
# TYPE connopt_ports_leases_total counter
connopt_ports_leases_total{strategy="tracked"} 2
`
	if err := testutil.CollectAndCompare(a, strings.NewReader(want),
		"connopt_ports_aging", "connopt_ports_exhausted_total", "connopt_ports_leases_in_use", "connopt_ports_leases_total"); err != nil {
		t.Fatal(err)
	}
}
