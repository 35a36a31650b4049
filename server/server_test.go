package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/middleware"
	"github.com/connopt/connopt/prefork"
)

// start runs s until the returned stop is called; stop returns Run's error.
func start(t *testing.T, s *Server) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-errc:
			case <-time.After(30 * time.Second):
				err = errors.New("Run did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func get(t *testing.T, c net.Conn, br *bufio.Reader, path string) *fasthttp.Response {
	t.Helper()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path)
	resp := &fasthttp.Response{}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := resp.Read(br); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp
}

func hello(ctx *fasthttp.RequestCtx) { ctx.WriteString("Hello, World!") }

func TestServesWithMetrics(t *testing.T) {
	for _, separate := range []bool{false, true} {
		t.Run(fmt.Sprintf("separate=%v", separate), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			cfg := Config{Addr: "127.0.0.1:0", Shards: 2, Registry: reg, DisableSignals: true, Logger: testkit.Quiet{}}
			if separate {
				cfg.MetricsAddr = "127.0.0.1:0"
			}
			s, err := New(middleware.Chain(hello, middleware.Metrics(reg)), cfg)
			if err != nil {
				t.Fatal(err)
			}
			start(t, s)
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			for range 10 {
				if r := get(t, c, br, "/"); string(r.Body()) != "Hello, World!" {
					t.Fatalf("body %q", r.Body())
				}
			}
			maddr := s.Addr().String()
			if separate {
				maddr = s.MetricsAddr().String()
				// On the main address /metrics is the application's.
				if r := get(t, c, br, "/metrics"); strings.Contains(string(r.Body()), "connopt_") {
					t.Fatal("metrics served on the main address too")
				}
			}
			mc, err := net.Dial("tcp", maddr)
			if err != nil {
				t.Fatal(err)
			}
			defer mc.Close()
			body := string(get(t, mc, bufio.NewReader(mc), "/metrics").Body())
			wantReqs, wantAccepted := 10, 2
			if separate {
				wantReqs = 11 // the /metrics request on the main address went to the application
			}
			for _, want := range []string{
				fmt.Sprintf(`connopt_http_requests_total{code="200",method="GET"} %d`, wantReqs),
				fmt.Sprintf("connopt_listener_accepted_connections_total %d", wantAccepted),
				"connopt_listener_active_connections 2",
				"connopt_http_requests_in_flight 0",
			} {
				if !strings.Contains(body, want+"\n") {
					t.Errorf("/metrics lacks %q", want)
				}
			}
		})
	}
}

// 200 requests in flight, each 200 ms in the handler; the stop lets every
// one finish with 200 OK, refuses new connections, returns in time, and
// leaves no descriptor or goroutine behind.
func TestGracefulStop(t *testing.T) {
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	var entered atomic.Int64
	s, err := New(func(ctx *fasthttp.RequestCtx) {
		entered.Add(1)
		time.Sleep(200 * time.Millisecond)
		ctx.WriteString("done")
	}, Config{Addr: "127.0.0.1:0", DisableSignals: true, ShutdownTimeout: 5 * time.Second, Logger: testkit.Quiet{},
		MaxIdleWorkerDuration: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()

	const n = 200
	var wg sync.WaitGroup
	results := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				results <- err
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
			var resp fasthttp.Response
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := resp.Read(bufio.NewReader(c)); err != nil {
				results <- err
				return
			}
			if resp.StatusCode() != 200 || string(resp.Body()) != "done" {
				results <- fmt.Errorf("status %d body %q", resp.StatusCode(), resp.Body())
				return
			}
			results <- nil
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for entered.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d requests reached the handler", entered.Load())
		}
		time.Sleep(time.Millisecond)
	}
	stopped := time.Now()
	cancel()
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Fatalf("a request in flight at the stop: %v", err)
		}
	}
	testkit.Returns(t, runErr, 10*time.Second, "Run")
	if d := time.Since(stopped); d > 5*time.Second {
		t.Fatalf("stop took %v, beyond the 5 s deadline", d)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("a new connection was accepted after the stop")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after stop: %v, want connection refused", err)
	}
	leakcheck.Settle(t, fds, gs)
}

func TestShutdownDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s, err := New(func(ctx *fasthttp.RequestCtx) { <-release }, Config{Addr: "127.0.0.1:0", DisableSignals: true,
		ShutdownTimeout: 200 * time.Millisecond, Logger: testkit.Quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, s)
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	for s.ListenerMetrics().Snapshot().Accepted == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	t0 := time.Now()
	if err := stop(); !errors.Is(err, ErrShutdownTimeout) {
		t.Fatalf("Run: %v, want ErrShutdownTimeout", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("stop took %v with a 200 ms deadline", d)
	}
	// The stuck connection was closed.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read from the stuck connection: %v", err)
	}
}

func TestNewBadInput(t *testing.T) {
	if _, err := New(nil, Config{}); err == nil {
		t.Error("nil handler accepted")
	}
	s, err := New(hello, Config{Addr: "127.0.0.1:0", Shards: 1, DisableSignals: true})
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	// The address is taken by shards with SO_REUSEPORT; a listener without
	// it cannot join.
	if _, err := net.Listen("tcp", s.Addr().String()); err == nil {
		t.Error("a plain listener joined the shards")
	}
	if _, err := New(hello, Config{Addr: "127.0.0.1:notaport"}); err == nil {
		t.Error("bad address accepted")
	}
	if _, err := New(hello, Config{Addr: "127.0.0.1:0", Namespace: "connopt-no-such-namespace"}); err == nil {
		t.Error("missing namespace accepted")
	}
}

// With Prefork and MetricsAddr, child k serves metrics on the port plus k,
// so that each child can be scraped.
func TestChildMetricsAddr(t *testing.T) {
	for _, c := range []struct {
		addr string
		slot int
		want string
	}{
		{"127.0.0.1:9100", -1, "127.0.0.1:9100"}, // not a child
		{"127.0.0.1:9100", 0, "127.0.0.1:9100"},
		{"127.0.0.1:9100", 3, "127.0.0.1:9103"},
		{"[::1]:9100", 1, "[::1]:9101"},
		{":9100", 2, ":9102"},
		{"127.0.0.1:0", 2, "127.0.0.1:0"}, // each child gets a port of its own anyway
	} {
		got, err := childMetricsAddr(c.addr, c.slot)
		if err != nil || got != c.want {
			t.Errorf("childMetricsAddr(%q, %d) = %q, %v; want %q", c.addr, c.slot, got, err, c.want)
		}
	}
	if _, err := childMetricsAddr("no-port", 1); err == nil {
		t.Error("an address without a port accepted")
	}
}

// In a prefork parent New opens the sockets and nothing else: no handler
// runs there, but Registry is usable (collectors registered on it reach
// nobody's /metrics, and must not panic) and the address is known.
func TestPreforkParentNew(t *testing.T) {
	s, err := New(hello, Config{Addr: "127.0.0.1:0", Prefork: &prefork.Config{Children: 2}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Supervisor().Close()
	if s.Supervisor() == nil || s.Registry() == nil || s.ListenerMetrics() != nil || s.Addr() == nil {
		t.Fatalf("parent: supervisor %v, registry %v, listener metrics %v, addr %v", s.Supervisor(), s.Registry(), s.ListenerMetrics(), s.Addr())
	}
	s.Registry().MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "x"}))
}

// During the drain every response on Addr says Connection: close: the
// application's and the /metrics served there alike, so a scraper does
// not keep a connection the drain's end closes under it.
func TestDrainClosesMetricsConnections(t *testing.T) {
	s, err := New(hello, Config{Addr: "127.0.0.1:0", DisableSignals: true, DrainTimeout: 2 * time.Second, Logger: testkit.Quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	stop := start(t, s)
	addr := s.Addr().String()
	var conns [2]net.Conn
	var readers [2]*bufio.Reader
	for i, path := range []string{"/", "/metrics"} {
		c, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i], readers[i] = c, bufio.NewReader(c)
		if r := get(t, c, readers[i], path); r.StatusCode() != 200 || r.ConnectionClose() {
			t.Fatalf("GET %s before the stop: %d, close %v", path, r.StatusCode(), r.ConnectionClose())
		}
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	testkit.Eventually(t, "the stop to begin", func() bool { return s.drain.Stopping() })
	for i, path := range []string{"/", "/metrics"} {
		if r := get(t, conns[i], readers[i], path); r.StatusCode() != 200 || !r.ConnectionClose() {
			t.Errorf("GET %s during the drain: %d, Connection: close %v; want it", path, r.StatusCode(), r.ConnectionClose())
		}
	}
	testkit.Returns(t, stopped, 10*time.Second, "Run")
}
