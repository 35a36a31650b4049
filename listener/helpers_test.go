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
		testkit.Returns(t, done, 10*time.Second, "Serve after Shutdown")
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
// server's connection goroutines exit asynchronously) and the active gauge
// reads wantActive.
func waitBaseline(t *testing.T, base resources, m *Metrics, wantActive int64) {
	t.Helper()
	leakcheck.SettleWhen(t, base.fds, base.goroutines, func() (bool, string) {
		active := m.Snapshot().Active
		return active == wantActive, fmt.Sprintf("active connections %d (want %d)", active, wantActive)
	})
}
