package reliability

import (
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/server"
)

func rssBytes() uint64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kib, _ := strconv.ParseUint(f[0], 10, 64)
				return kib << 10
			}
		}
	}
	return 0
}

// Thousands of idle connections (the descriptor limit, 20,000 here, holds
// both ends in this process: 9,000 of each) while well-behaved clients are
// served; memory stays bounded, and the idle timeout reclaims them all.
func TestManyIdleConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const n = 9000
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	func() {
		s, stop := startServer(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") },
			server.Config{IdleTimeout: 3 * time.Second, ReadTimeout: 3 * time.Second})
		defer stop()
		addr := s.Addr().String()
		before := rssBytes()
		conns := make([]net.Conn, 0, n)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := range n {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("idle connection %d: %v", i, err)
			}
			// One byte past TCP_DEFER_ACCEPT, then silence: a request
			// that never completes.
			c.Write([]byte("G"))
			conns = append(conns, c)
		}
		deadline := time.Now().Add(10 * time.Second)
		for s.ListenerMetrics().Snapshot().Active < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if a := s.ListenerMetrics().Snapshot().Active; a < n {
			t.Fatalf("%d of %d idle connections accepted", a, n)
		}
		for range 5 {
			wellBehaved(t, addr)
		}
		grown := int64(rssBytes()) - int64(before)
		t.Logf("%d idle connections: RSS grew %d KiB (%.1f KiB each, both ends)", n, grown>>10, float64(grown)/1024/n)
		// Measured at 13 KiB per pair (a goroutine, fasthttp's 4 KiB
		// read buffer and request context, the client's conn); the bound
		// catches a per-connection allocation that grows with time or
		// input, not a few bytes more.
		perPair := int64(32 << 10)
		if raceEnabled {
			perPair *= 4
		}
		if grown > perPair*n {
			t.Fatalf("RSS grew %d MiB for %d idle connections (%d KiB each)", grown>>20, n, grown/n>>10)
		}
		// The read timeout closes the stalled requests.
		deadline = time.Now().Add(10 * time.Second)
		for s.ListenerMetrics().Snapshot().Active > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if a := s.ListenerMetrics().Snapshot().Active; a != 0 {
			t.Fatalf("%d idle connections still open after the timeouts", a)
		}
	}()
	leakcheck.Settle(t, fds, gs)
}
