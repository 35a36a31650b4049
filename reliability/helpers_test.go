package reliability

import (
	"net"
	"os"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestMain serves one fasthttp server and stops it before the tests, so the
// goroutine fasthttp starts once per process (its Date header clock) is in
// every test's baseline, not counted as a leak.
func TestMain(m *testing.M) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err == nil {
		s := &fasthttp.Server{Handler: func(*fasthttp.RequestCtx) {}}
		go s.Serve(ln)
		if c, err := net.Dial("tcp4", ln.Addr().String()); err == nil {
			c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			c.Read(make([]byte, 64))
			c.Close()
		}
		s.Shutdown()
	}
	os.Exit(m.Run())
}

func errNotExist() error { return os.ErrNotExist }
