package reliability

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/procstat"
	"github.com/connopt/connopt/server"
)

const idleChildEnv = "CONNOPT_RELIABILITY_IDLE_CHILD"

// idleChild opens n connections to addr, sends one byte on each (past
// TCP_DEFER_ACCEPT: a request that never completes), says "held", and
// keeps them until its stdin closes.
func idleChild(addr string, n int) {
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		c.Write([]byte("G"))
		conns = append(conns, c)
	}
	fmt.Println("held")
	io.Copy(io.Discard, os.Stdin)
	runtime.KeepAlive(conns) // held until stdin closes
}

// 10,000 idle connections, their client ends in a child process (one
// process cannot hold both ends under the 20,000-descriptor limit): the
// server keeps serving well-behaved clients, its memory per connection
// stays bounded, and the read timeout reclaims them all.
func TestManyIdleConnections(t *testing.T) {
	if v := os.Getenv(idleChildEnv); v != "" {
		addr, count, _ := strings.Cut(v, ",")
		n, _ := strconv.Atoi(count)
		idleChild(addr, n)
		return
	}
	const n = 10000
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	func() {
		// The timeouts must outlast the child's dialing of all n (a
		// connection is accepted when its byte arrives, and its read
		// timeout starts then): at 3 s, with server tests running beside
		// it under -race (make soak), the first were reclaimed before the
		// last were dialed and the count never reached n.
		const timeout = 8 * time.Second
		s, stop := startServer(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") },
			server.Config{IdleTimeout: timeout, ReadTimeout: timeout})
		defer stop()
		addr := s.Addr().String()
		runtime.GC()
		before := procstat.RSS()

		child := exec.Command(os.Args[0], "-test.run=^TestManyIdleConnections$")
		child.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", idleChildEnv, addr, n))
		stdin, _ := child.StdinPipe()
		stdout, _ := child.StdoutPipe()
		child.Stderr = os.Stderr
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		defer child.Wait()
		defer stdin.Close()
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		if strings.TrimSpace(line) != "held" {
			t.Fatalf("child: %q", line)
		}
		deadline := time.Now().Add(timeout)
		for s.ListenerMetrics().Snapshot().Active < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if a := s.ListenerMetrics().Snapshot().Active; a < n {
			t.Fatalf("%d of %d idle connections accepted", a, n)
		}
		for range 5 {
			wellBehaved(t, addr)
		}
		grown := int64(procstat.RSS()) - int64(before)
		t.Logf("%d idle connections: server RSS grew %d KiB (%.1f KiB each)", n, grown>>10, float64(grown)/1024/n)
		// Measured at about 12 KiB (a goroutine, fasthttp's 4 KiB read
		// buffer and request context); the bound catches an allocation
		// that grows with time or input, not a few bytes more.
		perConn := int64(24 << 10)
		if raceEnabled {
			perConn *= 4
		}
		if grown > perConn*n {
			t.Fatalf("server RSS grew %d MiB for %d idle connections (%d KiB each)", grown>>20, n, grown/n>>10)
		}
		// The read timeout closes the stalled requests.
		deadline = time.Now().Add(timeout + 7*time.Second)
		for s.ListenerMetrics().Snapshot().Active > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if a := s.ListenerMetrics().Snapshot().Active; a != 0 {
			t.Fatalf("%d idle connections still open after the timeouts", a)
		}
	}()
	leakcheck.Settle(t, fds, gs)
}
