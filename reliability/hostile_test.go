package reliability

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/server"
)

// startServer runs server.New; stop ends it and reports Run's error.
func startServer(t *testing.T, h fasthttp.RequestHandler, cfg server.Config) (s *server.Server, stop func()) {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.DisableSignals = true
	cfg.Logger = testkit.Quiet{}
	cfg.MaxIdleWorkerDuration = 50 * time.Millisecond
	s, err := server.New(h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return s, stop
}

// wellBehaved checks that a normal client is still served promptly.
func wellBehaved(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("a well-behaved client could not connect: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	var resp fasthttp.Response
	if err := resp.Read(bufio.NewReader(c)); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("a well-behaved client was not served: %d %v", resp.StatusCode(), err)
	}
}

// rawExchange sends raw bytes and returns the status line the server
// answered with ("" if it closed without one).
func rawExchange(t *testing.T, addr string, req []byte) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(req)
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

// Malformed and oversized requests get the right status or a close, and the
// server keeps serving others.
func TestBadRequests(t *testing.T) {
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	func() {
		s, stop := startServer(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") },
			server.Config{MaxRequestBodySize: 1 << 10, ReadTimeout: time.Second, WriteTimeout: time.Second})
		defer stop()
		addr := s.Addr().String()
		for _, tc := range []struct {
			name string
			req  []byte
			want string // status codes accepted, "|"-separated
		}{
			{"garbage request line", []byte("HELLO\r\n\r\n"), "400"},
			{"no HTTP version", []byte("GET /\r\n\r\n"), "400"},
			{"NUL in a header", []byte("GET / HTTP/1.1\r\nHost: te\x00st\r\n\r\n"), "400"},
			{"oversized headers", append(append([]byte("GET / HTTP/1.1\r\nHost: test\r\nX-Big: "), bytes.Repeat([]byte("a"), 16<<10)...), "\r\n\r\n"...), "431"},
			{"oversized body", []byte("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1048576\r\n\r\n" + strings.Repeat("b", 4096)), "413|400"}, // fasthttp answers 400 for a body over MaxRequestBodySize
			{"negative content length", []byte("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: -5\r\n\r\n"), "400"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				line := rawExchange(t, addr, tc.req)
				ok := false
				for _, code := range strings.Split(tc.want, "|") {
					ok = ok || strings.Contains(line, " "+code+" ")
				}
				if !ok {
					t.Errorf("answered %q, want status %s", line, tc.want)
				}
				wellBehaved(t, addr)
			})
		}
	}()
	leakcheck.Settle(t, fds, gs)
}

// A client that sends its headers a byte at a time (slowloris) and one that
// never reads a large response are cut off by the timeouts, while others
// are served all along.
func TestSlowClients(t *testing.T) {
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	func() {
		big := bytes.Repeat([]byte("x"), 32<<20)
		s, stop := startServer(t, func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Path()) == "/big" {
				ctx.Write(big)
				return
			}
			ctx.WriteString("ok")
		}, server.Config{ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
		defer stop()
		addr := s.Addr().String()

		var wg sync.WaitGroup
		var slowCut, readerCut atomic.Bool
		wg.Add(2)
		go func() { // slowloris
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			req := []byte("GET / HTTP/1.1\r\nHost: test\r\nX-Slow: ")
			start := time.Now()
			for i := 0; time.Since(start) < 5*time.Second; i++ {
				if _, err := c.Write(req[i%len(req) : i%len(req)+1]); err != nil {
					slowCut.Store(true)
					return
				}
				c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					slowCut.Store(true) // closed by the server
					return
				}
			}
		}()
		go func() { // never reads the response
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
			time.Sleep(2 * time.Second) // the server's write times out meanwhile
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _ := io.Copy(io.Discard, c)
			readerCut.Store(n < int64(len(big)))
		}()
		for range 10 {
			wellBehaved(t, addr)
			time.Sleep(100 * time.Millisecond)
		}
		wg.Wait()
		if !slowCut.Load() {
			t.Error("the slowloris client was not cut off within 5 s by a 500 ms read timeout")
		}
		if !readerCut.Load() {
			t.Error("the client that never read got the whole 32 MiB response: no write timeout")
		}
	}()
	leakcheck.Settle(t, fds, gs)
}
