package listener

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
	"golang.org/x/net/nettest"

	"github.com/connopt/connopt/internal/testkit"
)

func hello(ctx *fasthttp.RequestCtx) { ctx.WriteString("Hello, World!") }

func TestFasthttpKeepAlive(t *testing.T) {
	ln := listenT(t, Config{})
	serve(t, ln, hello)

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 100 {
		resp, err := get(c, br, "/", "")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if string(resp.Body()) != "Hello, World!" || resp.ConnectionClose() {
			t.Fatalf("request %d: body %q, close %v", i, resp.Body(), resp.ConnectionClose())
		}
	}
	if s := ln.Metrics().Snapshot(); s.Accepted != 1 {
		t.Fatalf("100 keep-alive requests accepted %d connections, want 1", s.Accepted)
	}
}

func TestFasthttpPipelined(t *testing.T) {
	ln := listenT(t, Config{})
	serve(t, ln, func(ctx *fasthttp.RequestCtx) { ctx.Write(ctx.Path()) })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 16
	var reqs bytes.Buffer
	for i := range n {
		fmt.Fprintf(&reqs, "GET /r%d HTTP/1.1\r\nHost: test\r\n\r\n", i)
	}
	// One write carries all requests, as TechEmpower's plaintext load does.
	if _, err := c.Write(reqs.Bytes()); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for i := range n {
		var resp fasthttp.Response
		if err := resp.Read(br); err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		if want := fmt.Sprintf("/r%d", i); string(resp.Body()) != want {
			t.Fatalf("response %d: body %q, want %q", i, resp.Body(), want)
		}
	}
}

func TestFasthttpConnectionClose(t *testing.T) {
	ln := listenT(t, Config{})
	serve(t, ln, hello)
	for i := range 20 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := get(c, br, "/", "Connection: close\r\n")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if !resp.ConnectionClose() || string(resp.Body()) != "Hello, World!" {
			t.Fatalf("request %d: close %v body %q", i, resp.ConnectionClose(), resp.Body())
		}
		// The server closes after the response.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("after Connection: close read %v, %v; want EOF", n, err)
		}
		c.Close()
	}
	if s := ln.Metrics().Snapshot(); s.Accepted != 20 {
		t.Fatalf("accepted %d, want 20", s.Accepted)
	}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

func TestFasthttpLargeBodies(t *testing.T) {
	ln := listenT(t, Config{})
	big := pattern(3<<20 + 17) // far beyond socket buffers: partial writes happen
	serve(t, ln, func(ctx *fasthttp.RequestCtx) {
		if !bytes.Equal(ctx.PostBody(), big[:len(ctx.PostBody())]) {
			ctx.Error("request body corrupted", fasthttp.StatusBadRequest)
			return
		}
		fmt.Fprintf(ctx, "%d|", len(ctx.PostBody()))
		ctx.Write(big)
	})
	client := &fasthttp.HostClient{Addr: ln.Addr().String(), MaxResponseBodySize: 8 << 20}
	defer client.CloseIdleConnections()
	for _, size := range []int{0, 100, 64<<10 + 1, 1 << 20} {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://test/upload")
		req.Header.SetMethod("POST")
		req.SetBody(big[:size])
		if err := client.DoTimeout(req, resp, 20*time.Second); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		want := append([]byte(fmt.Sprintf("%d|", size)), big...)
		if resp.StatusCode() != 200 || !bytes.Equal(resp.Body(), want) {
			t.Fatalf("size %d: status %d, body of %d bytes, want %d", size, resp.StatusCode(), len(resp.Body()), len(want))
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
}

func TestFasthttpSendFile(t *testing.T) {
	dir := t.TempDir()
	content := pattern(5<<20 + 3)
	path := filepath.Join(dir, "big.bin")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	ln := listenT(t, Config{})
	serve(t, ln, func(ctx *fasthttp.RequestCtx) { ctx.SendFile(path) })

	client := &fasthttp.HostClient{Addr: ln.Addr().String(), MaxResponseBodySize: 16 << 20}
	defer client.CloseIdleConnections()
	for i := range 3 {
		status, body, err := client.GetTimeout(nil, "http://test/big.bin", 20*time.Second)
		if err != nil {
			t.Fatalf("get %d: %v", i, err)
		}
		if status != 200 || !bytes.Equal(body, content) {
			t.Fatalf("get %d: status %d, %d bytes, want %d", i, status, len(body), len(content))
		}
	}
}

// A client that resets the connection while the server is writing a large
// response: the server learns it from the write error (counted as a peer
// close), keeps serving others, and leaks nothing.
func TestFasthttpResetMidResponse(t *testing.T) {
	ln := listenT(t, Config{WrapConns: true})
	huge := pattern(32 << 20)
	serve(t, ln, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/huge" {
			ctx.Write(huge)
			return
		}
		hello(ctx)
	})
	warm, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := get(warm, bufio.NewReader(warm), "/", ""); err != nil {
		t.Fatal(err)
	}
	warm.Close()
	waitBaseline(t, snapshot(t), ln.Metrics(), 0)
	base := snapshot(t)

	for i := range 5 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /huge HTTP/1.1\r\nHost: test\r\n\r\n")
		buf := make([]byte, 64<<10)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("reading the start of the response: %v", err)
		}
		// Linger 0: close sends RST, and the server is mid-write.
		c.(*net.TCPConn).SetLinger(0)
		c.Close()

		// Others are still served.
		ok, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		resp, err := get(ok, bufio.NewReader(ok), "/", "")
		if err != nil || string(resp.Body()) != "Hello, World!" {
			t.Fatalf("round %d: request after a reset: %v", i, err)
		}
		ok.Close()
	}
	waitBaseline(t, base, ln.Metrics(), 0)
	if s := ln.Metrics().Snapshot(); s.PeerClosedWrite < 5 {
		t.Fatalf("peer closes seen on write: %d, want 5", s.PeerClosedWrite)
	}
}

// pair returns an accepted Conn and the client side of it.
func pair(t *testing.T, ln *Listener) (net.Conn, *net.TCPConn) {
	t.Helper()
	cc, sc, err := testkit.Pair(ln, func(a string) (net.Conn, error) { return net.Dial("tcp", a) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close(); cc.Close() })
	return sc, cc.(*net.TCPConn)
}

func TestErrPeerClosedOnWrite(t *testing.T) {
	ln := listenT(t, Config{WrapConns: true})
	sc, cc := pair(t, ln)
	cc.SetLinger(0)
	cc.Close()

	var err error
	chunk := make([]byte, 4096)
	for range 1000 {
		if _, err = sc.Write(chunk); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes to a reset peer kept succeeding")
	}
	if !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("write error %v does not match ErrPeerClosed", err)
	}
	if !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("write error %v lost its errno", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" || oe.Addr == nil {
		t.Fatalf("write error %#v is not a *net.OpError with Op write and an address", err)
	}
	if !strings.Contains(err.Error(), "write") {
		t.Fatalf("error text changed: %q", err)
	}
	if got := ln.Metrics().Snapshot().PeerClosedWrite; got != 1 {
		t.Fatalf("PeerClosedWrite = %d, want 1", got)
	}
}

func TestErrPeerClosedOnRead(t *testing.T) {
	ln := listenT(t, Config{WrapConns: true})
	sc, cc := pair(t, ln)
	cc.SetLinger(0)
	cc.Close()
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := sc.Read(make([]byte, 10))
	if !errors.Is(err, ErrPeerClosed) || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after RST: %v, want ECONNRESET matching ErrPeerClosed", err)
	}
	if got := ln.Metrics().Snapshot().PeerClosedRead; got != 1 {
		t.Fatalf("PeerClosedRead = %d, want 1", got)
	}
}

// Errors that are not a vanished peer must not match.
func TestErrPeerClosedOnlyForPeer(t *testing.T) {
	ln := listenT(t, Config{WrapConns: true})
	sc, cc := pair(t, ln)

	// An orderly close is EOF, not an error.
	cc.CloseWrite()
	if _, err := sc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after FIN: %v, want io.EOF", err)
	}
	sc.SetReadDeadline(time.Now().Add(-time.Second))
	_, err := sc.Read(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ErrPeerClosed) {
		t.Fatalf("read past deadline: %v", err)
	}
	sc.Close()
	_, err = sc.Write([]byte("x"))
	if !errors.Is(err, net.ErrClosed) || errors.Is(err, ErrPeerClosed) {
		t.Fatalf("write after Close: %v, want net.ErrClosed only", err)
	}
	_, err = sc.Read(make([]byte, 1))
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v, want net.ErrClosed", err)
	}
	if s := ln.Metrics().Snapshot(); s.PeerClosedRead+s.PeerClosedWrite != 0 || s.Active != 0 {
		t.Fatalf("counters after non-peer errors: %+v", s)
	}
	// Close twice: the gauge counts once.
	sc.Close()
	if a := ln.Metrics().Snapshot().Active; a != 0 {
		t.Fatalf("active after double close = %d", a)
	}
}

func TestConnKeepsStdlibShape(t *testing.T) {
	for _, wrap := range []bool{false, true} {
		t.Run(fmt.Sprintf("WrapConns=%v", wrap), func(t *testing.T) { testConnShape(t, wrap) })
	}
}

func testConnShape(t *testing.T, wrap bool) {
	ln := listenT(t, Config{WrapConns: wrap})
	sc, cc := pair(t, ln)
	if _, isTCP := sc.(*net.TCPConn); isTCP == wrap {
		t.Fatalf("WrapConns %v: accepted a %T", wrap, sc)
	}
	if _, ok := sc.RemoteAddr().(*net.TCPAddr); !ok {
		t.Errorf("RemoteAddr is %T", sc.RemoteAddr())
	}
	if _, ok := sc.LocalAddr().(*net.TCPAddr); !ok {
		t.Errorf("LocalAddr is %T", sc.LocalAddr())
	}
	if sc.RemoteAddr().String() != cc.LocalAddr().String() {
		t.Errorf("RemoteAddr %v, client's local address %v", sc.RemoteAddr(), cc.LocalAddr())
	}
	var nc net.Conn = sc
	if _, ok := nc.(io.ReaderFrom); !ok {
		t.Error("no io.ReaderFrom")
	}
	if _, ok := nc.(syscall.Conn); !ok {
		t.Error("no syscall.Conn")
	}
	// CloseWrite sends FIN and leaves the read side open.
	if err := sc.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("client read after server CloseWrite: %v", err)
	}
	cc.Write([]byte("still open"))
	buf := make([]byte, 10)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "still open" {
		t.Fatalf("read after CloseWrite: %q %v", buf, err)
	}
}

// The Go conformance suite for net.Conn: concurrent Read/Write/Close,
// deadlines in the past and future, Close during a blocked Read, and more.
func TestConnConformance(t *testing.T) {
	ln := listenT(t, Config{DeferAccept: -1})
	nettest.TestConn(t, testkit.MakePipe(ln, func(a string) (net.Conn, error) { return net.Dial("tcp", a) }))
}

func TestListenerClose(t *testing.T) {
	ln, err := Listen("tcp", "127.0.0.1:0", Config{})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := ln.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept blocked during Close returned %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Accept")
	}
	if err := ln.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if s := ln.Metrics().Snapshot(); s.AcceptErrors["other"] != 0 {
		t.Fatalf("closing counted as an accept error: %+v", s)
	}
}

func TestListenBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, network, addr string
		cfg                 Config
		want                error
	}{
		{"udp", "udp", "127.0.0.1:0", Config{}, net.UnknownNetworkError("udp")},
		{"unix", "unix", "/tmp/x.sock", Config{}, net.UnknownNetworkError("unix")},
		{"bad address", "tcp", "127.0.0.1:notaport", Config{}, nil},
		{"negative backlog", "tcp", "127.0.0.1:0", Config{Backlog: -1}, ErrInvalidConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := Listen(tc.network, tc.addr, tc.cfg)
			if err == nil {
				ln.Close()
				t.Fatal("Listen succeeded")
			}
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "listen" || oe.Net != tc.network {
				t.Fatalf("error %#v, want a *net.OpError for listen %s", err, tc.network)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if tc.want == nil {
				// What the resolver says is net's own: same text as stock.
				_, stock := net.Listen(tc.network, tc.addr)
				if stock == nil || err.Error() != stock.Error() {
					t.Fatalf("error %q, stock net.Listen %q", err, stock)
				}
			}
		})
	}
	// An address in use is a clear error, not a second listener.
	ln := listenT(t, Config{})
	if ln2, err := Listen("tcp", ln.Addr().String(), Config{}); err == nil {
		ln2.Close()
		t.Fatal("second Listen on an address in use (without ReusePort) succeeded")
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second Listen: %v, want EADDRINUSE", err)
	}
}

func TestMetricsCollector(t *testing.T) {
	ln := listenT(t, Config{WrapConns: true})
	serve(t, ln, hello)
	reg := prometheus.NewRegistry()
	if err := reg.Register(ln.Metrics()); err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := get(c, bufio.NewReader(c), "/", ""); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	conns[0].Close()
	testkit.Eventually(t, "2 active connections", func() bool { return ln.Metrics().Snapshot().Active == 2 })
	want := `
# HELP connopt_listener_accepted_connections_total Connections accepted.
# TYPE connopt_listener_accepted_connections_total counter
connopt_listener_accepted_connections_total 3
# HELP connopt_listener_active_connections Accepted connections not yet closed.
# TYPE connopt_listener_active_connections gauge
connopt_listener_active_connections 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"connopt_listener_accepted_connections_total", "connopt_listener_active_connections"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(ln.Metrics()); n != 10 {
		t.Fatalf("collector exposes %d series, want 10", n)
	}
	// Without WrapConns nothing counts active connections: the series is
	// left out rather than reported as 0.
	plain := listenT(t, Config{})
	if n := testutil.CollectAndCount(plain.Metrics()); n != 7 {
		t.Fatalf("collector of a plain listener exposes %d series, want 7", n)
	}
	if err := testutil.CollectAndCompare(ln.Metrics(), strings.NewReader(""), "connopt_listener_accept_errors_total"); err == nil {
		t.Fatal("accept errors series missing")
	}
	for _, c := range conns[1:] {
		c.Close()
	}
}

func TestConcurrentClients(t *testing.T) {
	ln := listenT(t, Config{})
	serve(t, ln, hello)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					errs <- err
					return
				}
				hdr := ""
				if (g+i)%2 == 0 {
					hdr = "Connection: close\r\n"
				}
				resp, err := get(c, bufio.NewReader(c), "/", hdr)
				c.Close()
				if err != nil || string(resp.Body()) != "Hello, World!" {
					errs <- fmt.Errorf("client %d request %d: %v", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if s := ln.Metrics().Snapshot(); s.Accepted != 32*20 {
		t.Fatalf("accepted %d, want %d", s.Accepted, 32*20)
	}
}
