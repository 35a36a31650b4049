package listener

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/testkit"
)

// serve runs a fasthttp server on ln until the test ends.
func serve(t *testing.T, ln net.Listener, h fasthttp.RequestHandler) *fasthttp.Server {
	t.Helper()
	s := &fasthttp.Server{
		Handler:      h,
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		Logger:       testkit.Logger{T: t},
		// Idle workers are reaped quickly, so goroutine counts settle
		// back to a baseline within the leak checks' patience.
		MaxIdleWorkerDuration: 50 * time.Millisecond,
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Shutdown(); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after Shutdown")
		}
	})
	return s
}

func listenT(t *testing.T, cfg Config) *Listener {
	t.Helper()
	ln, err := Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// get sends one request on c and reads its response.
func get(c net.Conn, br *bufio.Reader, path string, extraHeaders string) (*fasthttp.Response, error) {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: test\r\n%s\r\n", path, extraHeaders); err != nil {
		return nil, err
	}
	resp := &fasthttp.Response{}
	if err := resp.Read(br); err != nil {
		return nil, err
	}
	return resp, nil
}

type resources struct{ fds, goroutines int }

func snapshot(t *testing.T) resources {
	return resources{fds: leakcheck.FDs(t), goroutines: runtime.NumGoroutine()}
}

// waitBaseline waits until descriptors and goroutines are back to base (the
// server's connection goroutines exit asynchronously), and fails if they do
// not come back within a few seconds.
func waitBaseline(t *testing.T, base resources, m *Metrics, wantActive int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		now := snapshot(t)
		active := m.Snapshot().Active
		if now.fds <= base.fds && now.goroutines <= base.goroutines && active == wantActive {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("leak: fds %d -> %d, goroutines %d -> %d, active connections %d (want %d)\n%s",
				base.fds, now.fds, base.goroutines, now.goroutines, active, wantActive, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
