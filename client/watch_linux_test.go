package client

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/internal/testns"
)

// A write on a connection marked gone sends nothing and fails with an
// error that matches ErrPeerClosed, ErrUnsent and EPIPE, shaped as net's;
// once something was written since the last read, it no longer says
// ErrUnsent. The upstream receives not a byte.
func TestUnsentWrite(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan int64, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { n, _ := io.Copy(io.Discard, c); received <- n; c.Close() }()
		}
	}()
	d := newDialer(t, Config{})
	for _, wroteFirst := range []bool{false, true} {
		c, err := d.Dial(ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fc := c.(*Conn)
		if wroteFirst {
			if _, err := c.Write([]byte("half a request")); err != nil {
				t.Fatal(err)
			}
		}
		fc.MarkGone()
		n, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		var oe *net.OpError
		if n != 0 || !errors.Is(err, ErrPeerClosed) || !errors.Is(err, syscall.EPIPE) || !errors.As(err, &oe) || oe.Op != "write" {
			t.Fatalf("write on a gone connection: %d, %v", n, err)
		}
		if errors.Is(err, ErrUnsent) == wroteFirst {
			t.Fatalf("wrote before: %v; error %v says unsent %v", wroteFirst, err, errors.Is(err, ErrUnsent))
		}
		// A PATCH is retried only when nothing of it left; a GET either
		// way, and then counts as a write retry if bytes had left.
		var req fasthttp.Request
		req.Header.SetMethod("PATCH")
		if _, retry := d.RetryIfErr(nil)(&req, 1, err); retry == wroteFirst {
			t.Fatalf("PATCH after %v (wrote before: %v): retry %v", err, wroteFirst, retry)
		}
		req.Header.SetMethod("GET")
		before := d.Stats().WriteRetries
		if _, retry := d.RetryIfErr(nil)(&req, 1, err); !retry {
			t.Fatalf("GET after %v: not retried", err)
		}
		if got := d.Stats().WriteRetries - before; (got == 1) != wroteFirst {
			t.Fatalf("wrote before: %v; write retries counted %d", wroteFirst, got)
		}
		c.Close()
		want := int64(0)
		if wroteFirst {
			want = int64(len("half a request"))
		}
		if got := <-received; got != want {
			t.Fatalf("upstream received %d bytes, want %d", got, want)
		}
	}
}

// countingUpstream is a minimal HTTP/1.1 server that answers each request
// with "ok", counts requests by method, and after answering the first
// request of a connection closes that connection as close says: "fin"
// (shutdown for writing, then it keeps reading and counts any byte that
// still arrives: a half-closing peer), "close" (FIN and the socket closed:
// a byte arriving after it makes the kernel answer RST and count
// TCPAbortOnData), or "rst" (SO_LINGER 0, close).
type countingUpstream struct {
	ln          net.Listener
	close       string
	requests    sync.Map // method -> *atomic.Int64
	lateBytes   atomic.Int64
	closedConns atomic.Int64
}

func newCountingUpstream(t *testing.T, ln net.Listener, close string) *countingUpstream {
	u := &countingUpstream{ln: ln, close: close}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); u.serve(c) }()
		}
	}()
	return u
}

func (u *countingUpstream) count(method string) int64 {
	v, _ := u.requests.LoadOrStore(method, new(atomic.Int64))
	return v.(*atomic.Int64).Load()
}

func (u *countingUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	var req fasthttp.Request
	if err := req.Read(br); err != nil {
		return
	}
	v, _ := u.requests.LoadOrStore(string(req.Header.Method()), new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	time.Sleep(20 * time.Millisecond) // the client has put the connection back in its pool
	u.closedConns.Add(1)
	switch u.close {
	case "fin":
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _ := io.Copy(io.Discard, br)
		u.lateBytes.Add(n)
	case "rst":
		c.(*net.TCPConn).SetLinger(0)
	}
}

// A pooled connection whose upstream closes it while idle (FIN, a
// half-close, or RST) is never written to: the request, GET or POST, goes
// to a new connection, is processed once, and no attempt is spent.
func TestIdleCloseNeverWritten(t *testing.T) {
	for _, how := range []string{"fin", "close", "rst"} {
		for _, kind := range []string{"HostClient", "Client", "LBClient"} {
			t.Run(how+"/"+kind, func(t *testing.T) { idleCloseNeverWritten(t, how, kind) })
		}
	}
}

type doer interface {
	DoTimeout(req *fasthttp.Request, resp *fasthttp.Response, timeout time.Duration) error
}

func idleCloseNeverWritten(t *testing.T, how, kind string) {
	// A full close is checked from the kernel's side: in a namespace of its
	// own, TCPAbortOnData counts the segments with data that reached a
	// socket already closed.
	var ns *testns.NS
	var ln net.Listener
	var err error
	if how == "close" {
		ns = testns.New(t, nil)
		ns.Do(t, func() { ln, err = net.Listen("tcp4", "127.0.0.1:0") })
	} else {
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	u := newCountingUpstream(t, ln, how)
	cfg := Config{}
	var aborts0 uint64
	if ns != nil {
		cfg.Namespace = ns.Name
		aborts0 = abortOnData(t, ns)
	}
	d := newDialer(t, cfg)
	var c doer
	var closeIdle func()
	switch kind {
	case "HostClient":
		hc := d.HostClient(addr)
		hc.MaxIdemponentCallAttempts = 1 // no retry: a wasted attempt fails the request
		c, closeIdle = hc, hc.CloseIdleConnections
	case "Client":
		fc := d.Client()
		fc.MaxIdemponentCallAttempts = 1
		c, closeIdle = fc, fc.CloseIdleConnections
	case "LBClient":
		lb := d.LBClient([]string{addr})
		for _, hc := range lb.Clients {
			hc.(*fasthttp.HostClient).MaxIdemponentCallAttempts = 1
		}
		c, closeIdle = lb, func() { lb.Clients[0].(*fasthttp.HostClient).CloseIdleConnections() }
	}
	defer closeIdle()
	fds := leakcheck.FDs(t)
	for i, method := range []string{"GET", "POST", "GET", "POST"} {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + addr + "/")
		req.Header.SetMethod(method)
		err := c.DoTimeout(req, resp, 5*time.Second)
		if err != nil || resp.StatusCode() != 200 {
			t.Fatalf("request %d (%s): %d %v", i, method, resp.StatusCode(), err)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		// Its connection is now idle in the pool; the upstream closes it
		// and the watcher sees it.
		testkit.Eventually(t, "the upstream's close to be seen", func() bool { return d.Stats().GoneIdle == uint64(i+1) })
	}
	if g, p := u.count("GET"), u.count("POST"); g != 2 || p != 2 {
		t.Fatalf("upstream processed %d GETs and %d POSTs, want 2 and 2", g, p)
	}
	s := d.Stats()
	if s.Redirected != 3 || s.DeadRetries != 0 || s.WriteRetries != 0 {
		t.Fatalf("stats %+v: want 3 requests redirected before writing, none retried", s)
	}
	closeIdle()
	testkit.Eventually(t, "the upstream to finish", func() bool { return u.closedConns.Load() == 4 })
	switch how {
	case "fin":
		time.Sleep(50 * time.Millisecond)
		if n := u.lateBytes.Load(); n != 0 {
			t.Fatalf("the half-closed upstream received %d bytes after its FIN", n)
		}
	case "close":
		if n := abortOnData(t, ns) - aborts0; n != 0 {
			t.Fatalf("%d segments with data reached the upstream's closed sockets (TCPAbortOnData)", n)
		}
	}
	leakcheck.Settle(t, fds, -1)
}

// abortOnData reads TcpExt TCPAbortOnData of ns's /proc/net/netstat.
func abortOnData(t *testing.T, ns *testns.NS) uint64 {
	t.Helper()
	var v uint64
	ns.Do(t, func() {
		b, err := os.ReadFile("/proc/thread-self/net/netstat")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for i := 0; i+1 < len(lines); i++ {
			names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) {
				continue
			}
			for k, name := range names {
				if name == "TCPAbortOnData" {
					v, _ = strconv.ParseUint(values[k], 10, 64)
					return
				}
			}
		}
		t.Fatal("no TcpExt TCPAbortOnData in /proc/net/netstat")
	})
	return v
}

// 1,000 idle connections die at once (the upstream restarts on the same
// address): no request afterwards spends an attempt on them, none fails,
// and every descriptor comes back.
func TestManyDieAtOnce(t *testing.T) {
	const n = 1000
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	release := make(chan struct{})
	var arrived atomic.Int64
	s1 := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if arrived.Add(1) <= n {
			<-release // hold until n connections are open
		}
		ctx.WriteString("one")
	}, Concurrency: 2 * n}
	done1 := make(chan error, 1)
	go func() { done1 <- s1.Serve(ln) }()

	d := newDialer(t, Config{PoolSize: 256})
	hc := d.HostClient(addr)
	hc.MaxConns = n
	hc.MaxIdemponentCallAttempts = 1
	defer hc.CloseIdleConnections()
	fds := leakcheck.FDs(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := hc.GetTimeout(nil, "http://"+addr+"/", 20*time.Second); err != nil {
				errs <- err
			}
		}()
	}
	testkit.Eventually(t, "n requests in flight", func() bool { return arrived.Load() == n })
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("filling the pool: %v", err)
	}
	if got := d.Stats().Active; got != n {
		t.Fatalf("%d connections open, want %d", got, n)
	}

	// The restart: every idle connection is closed by the old server.
	s1.Shutdown()
	<-done1
	testkit.Eventually(t, "every close to be seen", func() bool { return d.Stats().GoneIdle == n })
	ln2, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	upstream(t, ln2, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("two") }, 0)
	dialsBefore := d.Stats().Dials
	for i := range 200 {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + addr + "/")
		if i%2 == 1 {
			req.Header.SetMethod("POST")
		}
		if err := hc.DoTimeout(req, resp, 5*time.Second); err != nil || string(resp.Body()) != "two" {
			t.Fatalf("request %d after the restart: %q %v", i, resp.Body(), err)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
	st := d.Stats()
	if st.DeadRetries != 0 || st.Redirected > burstRedirects {
		t.Fatalf("after the restart: %+v; want no retry and at most %d redirects (then the dead pool is dropped)", st, burstRedirects)
	}
	t.Logf("1,000 dead idle connections: %d redirects, %d new dials for 200 requests", st.Redirected, st.Dials-dialsBefore)
	hc.CloseIdleConnections()
	leakcheck.Settle(t, fds, -1)
	if d.watch.len() != 0 {
		t.Fatalf("%d connections still registered", d.watch.len())
	}
}

// Close racing the FIN, and descriptors reused after Close: an event for a
// closed connection never marks the one that got its descriptor number.
func TestWatchTokens(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close() // the FIN races the client's Close
		}
	}()
	d := newDialer(t, Config{PoolSize: 64})
	fds := leakcheck.FDs(t)
	for range 500 {
		c, err := d.Dial(ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	leakcheck.Settle(t, fds, -1)
	testkit.Eventually(t, "the registry to empty", func() bool { return d.watch.len() == 0 })

	// Reuse: A's descriptor number goes to B; an event carrying A's token
	// (delivered late) must not touch B. This upstream holds its
	// connections open, so no real FIN marks B.
	held, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink := testkit.NewSink(held)
	defer sink.Close()
	a, err := d.Dial(held.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fdA, tokA := testkit.FD(t, a), d.watch.last()
	a.Close()
	var b net.Conn
	for range 64 { // the pool's next socket may hold another number for a while
		if b, err = d.Dial(held.Addr().String()); err != nil {
			t.Fatal(err)
		}
		if testkit.FD(t, b) == fdA {
			break
		}
		b.Close()
		b = nil
	}
	if b == nil {
		t.Skip("descriptor number not reused")
	}
	defer b.Close()
	tokB := d.watch.last()
	d.watch.handle([]unix.EpollEvent{tokenEvent(tokA)})
	if b.(*Conn).Gone() {
		t.Fatal("a stale event for a closed connection marked the one that reused its descriptor")
	}
	d.watch.handle([]unix.EpollEvent{tokenEvent(tokB)})
	if !b.(*Conn).Gone() {
		t.Fatal("an event for B did not mark B")
	}
}

func tokenEvent(token uint64) unix.EpollEvent {
	return unix.EpollEvent{Events: unix.EPOLLRDHUP, Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
}

// The epoll instance belongs to no namespace: a connection dialed into
// another namespace is watched as well.
func TestWatchInNamespace(t *testing.T) {
	ns := testns.New(t, nil)
	var ln net.Listener
	ns.Do(t, func() {
		var err error
		if ln, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	})
	u := newCountingUpstream(t, ln, "rst")
	d := newDialer(t, Config{Namespace: ns.Name})
	hc := d.HostClient(ln.Addr().String())
	hc.MaxIdemponentCallAttempts = 1
	defer hc.CloseIdleConnections()
	for i := range 3 {
		if _, _, err := hc.GetTimeout(nil, "http://upstream/", 5*time.Second); err != nil {
			t.Fatalf("request %d into the namespace: %v", i, err)
		}
		testkit.Eventually(t, "the close in the namespace to be seen", func() bool { return d.Stats().GoneIdle == uint64(i+1) })
	}
	if s := d.Stats(); s.Redirected != 2 || s.DeadRetries != 0 || u.count("GET") != 3 {
		t.Fatalf("stats %+v, %d GETs", s, u.count("GET"))
	}
}

// A Dialer's watcher goroutine and epoll descriptor end with Close, and
// connections made before keep working, unwatched.
func TestWatcherEndsWithClose(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sink := testkit.NewSink(ln)
	defer sink.Close()
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	d, err := NewDialer(Config{PoolSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	d.Close() // twice: a no-op
	if _, err := c.Write([]byte("still works")); err != nil {
		t.Fatalf("a connection made before Close: %v", err)
	}
	c.Close()
	// The sink accepts in a goroutine of its own: closing what it holds
	// before it has accepted this connection left that one open, counted
	// as a leak (one descriptor, in 1 of a few hundred runs under load).
	testkit.Eventually(t, "the sink to accept the connection", func() bool { return sink.Count() == 1 })
	sink.CloseAll()
	leakcheck.Settle(t, fds, gs)
}
