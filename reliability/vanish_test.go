package reliability

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/listener"
	"github.com/connopt/connopt/server"
)

func rst(c net.Conn) {
	c.(interface{ SetLinger(int) error }).SetLinger(0)
	c.Close()
}

// Clients that vanish at every point of a request: RST after half a request,
// RST and FIN while the handler runs, RST while the response is written.
// The server counts them, panics nowhere, keeps serving, and leaks nothing.
func TestServerPeersVanish(t *testing.T) {
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	func() {
		var running atomic.Int64
		release := make(chan struct{}, 64)
		big := make([]byte, 16<<20)
		s, stop := startServer(t, func(ctx *fasthttp.RequestCtx) {
			switch string(ctx.Path()) {
			case "/slow":
				running.Add(1)
				<-release
				ctx.WriteString("late")
			case "/big":
				ctx.Write(big)
			default:
				ctx.WriteString("ok")
			}
		}, server.Config{ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
		defer stop()
		addr := s.Addr().String()
		dial := func() net.Conn {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}

		// Half a request, then RST.
		c := dial()
		c.Write([]byte("GET / HTTP/1.1\r\nHo"))
		time.Sleep(20 * time.Millisecond)
		rst(c)
		wellBehaved(t, addr)

		// RST and FIN while the handler runs.
		for _, vanish := range []func(net.Conn){rst, func(c net.Conn) { c.(*net.TCPConn).CloseWrite(); c.Close() }} {
			c := dial()
			fmt.Fprintf(c, "GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
			for running.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			vanish(c)
			running.Store(0)
			release <- struct{}{}
			wellBehaved(t, addr)
		}

		// RST while a 16 MiB response is being written.
		c = dial()
		fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
		io.ReadFull(c, make([]byte, 1<<16))
		rst(c)
		wellBehaved(t, addr)

		deadline := time.Now().Add(5 * time.Second)
		for s.ListenerMetrics().Snapshot().PeerClosedWrite == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if st := s.ListenerMetrics().Snapshot(); st.PeerClosedWrite == 0 {
			t.Fatalf("the reset during a write was not seen as a peer close: %+v", st)
		}
	}()
	leakcheck.Settle(t, fds, gs)
}

// The upstream vanishes under the client: a reset mid-response is an
// ErrPeerClosed error, and an upstream restarted while the client holds
// pooled connections costs idempotent requests nothing, while a POST that
// may have reached it fails clearly instead of being sent twice.
func TestUpstreamVanishes(t *testing.T) {
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	func() {
		d, err := client.NewDialer(client.Config{PoolSize: 8})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()

		// A raw upstream that resets after half a response.
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			bufio.NewReader(c).ReadString('\n')
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf"))
			time.Sleep(20 * time.Millisecond)
			rst(c)
		}()
		c, err := d.Dial(ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
		_, err = io.ReadAll(c)
		if !errors.Is(err, client.ErrPeerClosed) {
			t.Fatalf("reading a response cut by RST: %v, want ErrPeerClosed", err)
		}
		c.Close()
		ln.Close()

		// An upstream restarted on the same address under pooled
		// connections.
		uln, err := listener.Listen("tcp4", "127.0.0.1:0", listener.Config{})
		if err != nil {
			t.Fatal(err)
		}
		addr := uln.Addr().String()
		var posts atomic.Int64
		h := func(ctx *fasthttp.RequestCtx) {
			if ctx.IsPost() {
				posts.Add(1)
			}
			ctx.WriteString("up")
		}
		up := &fasthttp.Server{Handler: h, Logger: testkit.Quiet{}, MaxIdleWorkerDuration: 50 * time.Millisecond}
		go up.Serve(uln)
		hc := d.HostClient(addr)
		hc.MaxConns = 4
		hc.MaxIdleConnDuration = 100 * time.Millisecond // its cleaner goroutine ends soon after
		defer hc.CloseIdleConnections()
		for range 8 {
			if _, _, err := hc.GetTimeout(nil, "http://up/", 2*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		up.Shutdown() // closes the pooled connections' server ends
		uln2, err := listener.Listen("tcp4", addr, listener.Config{})
		if err != nil {
			t.Fatalf("restart on %s: %v", addr, err)
		}
		up2 := &fasthttp.Server{Handler: h, Logger: testkit.Quiet{}, MaxIdleWorkerDuration: 50 * time.Millisecond}
		go up2.Serve(uln2)
		defer up2.Shutdown()
		for i := range 8 {
			if status, _, err := hc.GetTimeout(nil, "http://up/", 2*time.Second); err != nil || status != 200 {
				t.Fatalf("GET %d after the restart: %d %v", i, status, err)
			}
		}
		if d.Stats().DeadRetries == 0 {
			t.Log("no pooled connection was dead by the time of the GETs")
		}
	}()
	leakcheck.Settle(t, fds, gs)
}
