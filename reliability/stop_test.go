package reliability

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/server"
)

// A stop under keep-alive and churn load: no response is cut short, and no
// request the server had started is dropped. What a stop can still cost a
// client is the two races HTTP/1.1 leaves to client retries (RFC 9112
// 9.3.1), counted and logged here: a request that crossed the server's
// close of an idle keep-alive connection, and a connection still in the
// kernel's accept queue when the listener closed, reset after the client
// sent its request.
func TestStopUnderLoad(t *testing.T) {
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	var handled atomic.Int64
	s, stop := startServer(t, func(ctx *fasthttp.RequestCtx) {
		handled.Add(1)
		time.Sleep(time.Millisecond)
		ctx.WriteString("complete")
	}, server.Config{ShutdownTimeout: 5 * time.Second})
	addr := s.Addr().String()

	var complete, refused, idleRace, queueReset, truncated atomic.Int64
	var wg sync.WaitGroup
	quit := make(chan struct{})
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			churn := g%2 == 0
			for {
				select {
				case <-quit:
					return
				default:
				}
				c, err := net.Dial("tcp", addr)
				if err != nil {
					switch {
					case errors.Is(err, syscall.ECONNREFUSED):
						refused.Add(1)
					case errors.Is(err, syscall.ECONNRESET):
						// The handshake was under way when the listener
						// closed: the same race as a connection reset in
						// the accept queue, met earlier (on loopback the
						// handshake runs inside connect). It failed in
						// about 1 of 40 runs under -race before it was
						// counted as such.
						queueReset.Add(1)
					default:
						t.Errorf("dial: %v", err)
					}
					return
				}
				cr := &countingReader{r: c}
				br := bufio.NewReader(cr)
				for i := range 50 {
					hdr := ""
					if churn {
						hdr = "Connection: close\r\n"
					}
					c.SetDeadline(time.Now().Add(10 * time.Second))
					before := cr.n.Load()
					if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: test\r\n%s\r\n", hdr); err != nil {
						idleRace.Add(1)
						break
					}
					var resp fasthttp.Response
					err := resp.Read(br)
					gotBytes := cr.n.Load() > before || br.Buffered() > 0
					switch {
					case err == nil && string(resp.Body()) == "complete":
						complete.Add(1)
					case err == nil || gotBytes:
						t.Errorf("a response was cut short: %v", err)
						truncated.Add(1)
					case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
						if i == 0 {
							queueReset.Add(1)
						} else {
							idleRace.Add(1)
						}
					default:
						t.Errorf("request %d on a connection: %v", i, err)
					}
					if err != nil || resp.ConnectionClose() || churn {
						break
					}
				}
				c.Close()
			}
		}()
	}
	for handled.Load() < 500 {
		time.Sleep(time.Millisecond)
	}
	stop()
	close(quit)
	wg.Wait()
	t.Logf("complete %d, refused after the stop %d, crossed an idle close %d, reset in the accept queue %d",
		complete.Load(), refused.Load(), idleRace.Load(), queueReset.Load())
	if truncated.Load() != 0 {
		t.Fatalf("%d responses lost or cut short", truncated.Load())
	}
	if complete.Load() < 500 {
		t.Fatalf("only %d complete responses", complete.Load())
	}
	leakcheck.Settle(t, fds, gs)
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}
