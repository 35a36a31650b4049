package listener

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/rawsock"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/sockopt"
)

// The options configured on the listener are what accepted sockets have,
// without the runtime setting them per accept.
func TestAcceptedSocketInheritsOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want rawsock.Options // expected on the accepted socket; buffers checked apart
	}{
		{"defaults", Config{}, rawsock.Options{NoDelay: true, KeepAlive: true,
			KeepIdle: sockopt.DefaultKeepAlive, KeepInterval: sockopt.DefaultKeepAliveInterval, KeepCount: sockopt.DefaultKeepAliveCount}},
		{"custom keep-alive and buffers", Config{Options: sockopt.Options{KeepAlive: 7 * time.Second, KeepAliveInterval: 3 * time.Second,
			KeepAliveCount: 4, ReadBuffer: 64 << 10, WriteBuffer: 96 << 10}},
			rawsock.Options{NoDelay: true, KeepAlive: true, KeepIdle: 7 * time.Second, KeepInterval: 3 * time.Second, KeepCount: 4}},
		{"keep-alive off", Config{Options: sockopt.Options{KeepAlive: -1}}, rawsock.Options{NoDelay: true, KeepAlive: false}},
		{"Nagle", Config{Options: sockopt.Options{Nagle: true}}, rawsock.Options{NoDelay: false, KeepAlive: true,
			KeepIdle: sockopt.DefaultKeepAlive, KeepInterval: sockopt.DefaultKeepAliveInterval, KeepCount: sockopt.DefaultKeepAliveCount}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := listenT(t, tc.cfg)
			lo := testkit.SockOptions(t, ln)
			sc, _ := pair(t, ln)
			got := testkit.SockOptions(t, sc.(syscall.Conn))

			if got.NoDelay != tc.want.NoDelay || got.KeepAlive != tc.want.KeepAlive {
				t.Fatalf("accepted: nodelay %v keepalive %v, want %v %v", got.NoDelay, got.KeepAlive, tc.want.NoDelay, tc.want.KeepAlive)
			}
			if tc.want.KeepAlive && (got.KeepIdle != tc.want.KeepIdle || got.KeepInterval != tc.want.KeepInterval || got.KeepCount != tc.want.KeepCount) {
				t.Fatalf("accepted keep-alive %v/%v/%d, want %v/%v/%d", got.KeepIdle, got.KeepInterval, got.KeepCount,
					tc.want.KeepIdle, tc.want.KeepInterval, tc.want.KeepCount)
			}
			if !lo.ReuseAddr {
				t.Fatal("listening socket lacks SO_REUSEADDR")
			}
			if tc.cfg.ReadBuffer > 0 {
				// Linux doubles what was set for its own bookkeeping.
				if got.RecvBuffer != 2*tc.cfg.ReadBuffer || got.SendBuffer != 2*tc.cfg.WriteBuffer {
					t.Fatalf("accepted buffers rcv %d snd %d, want %d %d", got.RecvBuffer, got.SendBuffer, 2*tc.cfg.ReadBuffer, 2*tc.cfg.WriteBuffer)
				}
				if lo.RecvBuffer != got.RecvBuffer || lo.SendBuffer != got.SendBuffer {
					t.Fatalf("listener buffers %d/%d differ from accepted %d/%d", lo.RecvBuffer, lo.SendBuffer, got.RecvBuffer, got.SendBuffer)
				}
			}
		})
	}
}

func TestListenerOnlyOptions(t *testing.T) {
	ln := listenT(t, Config{FastOpenQueue: 16, DeferAccept: 3 * time.Second})
	o := testkit.SockOptions(t, ln)
	if o.FastOpenQueue != 16 {
		t.Errorf("TCP_FASTOPEN = %d, want 16", o.FastOpenQueue)
	}
	// The kernel stores SYN-ACK retransmissions and reports the time they
	// cover, which rounds up.
	if o.DeferAccept < 3*time.Second {
		t.Errorf("TCP_DEFER_ACCEPT = %v, want >= 3s", o.DeferAccept)
	}
	off := listenT(t, Config{DeferAccept: -1})
	if o := testkit.SockOptions(t, off); o.DeferAccept != 0 || o.FastOpenQueue != 0 || o.ReusePort {
		t.Errorf("disabled options read back as %+v", o)
	}
}

// With TCP_DEFER_ACCEPT a connection that has sent nothing is not handed to
// Accept; once the request arrives it is, and the first read finds it.
func TestDeferAccept(t *testing.T) {
	ln := listenT(t, Config{DeferAccept: 5 * time.Second})
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	select {
	case c := <-accepted:
		c.Close()
		t.Fatal("a connection with no data was accepted despite TCP_DEFER_ACCEPT")
	case <-time.After(500 * time.Millisecond):
	}
	if _, err := cc.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-accepted:
		defer c.Close()
		if n, _ := unix.IoctlGetInt(testkit.FD(t, c), unix.SIOCINQ); n == 0 {
			t.Fatal("accepted socket has no bytes queued")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not accepted after the client spoke")
	}
}

func TestShards(t *testing.T) {
	lns, err := ListenShards("tcp", "127.0.0.1:0", 2, Config{})
	if err != nil {
		t.Fatal(err)
	}
	var hits [2]atomic.Int64
	for i, ln := range lns {
		t.Cleanup(func() { ln.Close() })
		if ln.Addr().String() != lns[0].Addr().String() {
			t.Fatalf("shard %d on %v, shard 0 on %v", i, ln.Addr(), lns[0].Addr())
		}
		if !testkit.SockOptions(t, ln).ReusePort {
			t.Fatalf("shard %d lacks SO_REUSEPORT", i)
		}
		serve(t, ln, func(ctx *fasthttp.RequestCtx) { hits[i].Add(1); hello(ctx) })
	}
	for range 64 {
		c, err := net.Dial("tcp", lns[0].Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := get(c, bufio.NewReader(c), "/", ""); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	// The kernel hashes each 4-tuple to a shard: 64 connections all landing
	// on one of two shards has a probability of 2^-63.
	if hits[0].Load() == 0 || hits[1].Load() == 0 {
		t.Fatalf("shard hits %d/%d: connections were not spread", hits[0].Load(), hits[1].Load())
	}
	if s := lns[1].Metrics().Snapshot(); s.Accepted != 64 || lns[0].Metrics() != lns[1].Metrics() {
		t.Fatalf("shared metrics accepted %d, want 64", s.Accepted)
	}
	if _, err := ListenShards("tcp", "127.0.0.1:0", 0, Config{}); err == nil {
		t.Fatal("0 shards accepted")
	}
}

func TestBacklog(t *testing.T) {
	ss, err := exec.LookPath("ss")
	if err != nil {
		t.Skip("ss (iproute2) not installed; .ci/run installs it")
	}
	ln := listenT(t, Config{Backlog: 7})
	port := ln.Addr().(*net.TCPAddr).Port
	out, err := exec.Command(ss, "-Hltn", fmt.Sprintf("sport = :%d", port)).Output()
	if err != nil {
		t.Fatal(err)
	}
	// State Recv-Q Send-Q ...: for a listener Send-Q is the backlog.
	f := strings.Fields(string(out))
	if len(f) < 3 || f[2] != "7" {
		t.Fatalf("ss reports %q, want a backlog (Send-Q) of 7", out)
	}
}

func timeWaitOnPort(t *testing.T, port int) int {
	t.Helper()
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		local := f[1]
		p, _ := strconv.ParseInt(local[strings.IndexByte(local, ':')+1:], 16, 32)
		if int(p) == port && f[3] == "06" { // TCP_TIME_WAIT
			n++
		}
	}
	return n
}

// A server restarted right after closing, while its old connections sit in
// TIME_WAIT, binds again instead of failing with EADDRINUSE.
func TestRestartWithTimeWait(t *testing.T) {
	ln, err := Listen("tcp", "127.0.0.1:0", Config{})
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	port := ln.Addr().(*net.TCPAddr).Port
	s := &fasthttp.Server{Handler: hello}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	for range 5 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		if _, err := get(c, br, "/", "Connection: close\r\n"); err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, br) // the server closes first: TIME_WAIT is on its side
		c.Close()
	}
	s.Shutdown()
	<-done
	if n := timeWaitOnPort(t, port); n == 0 {
		t.Fatal("no TIME_WAIT sockets on the server port; the test proves nothing")
	}

	// Without SO_REUSEADDR the bind fails: the condition is real.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return rawsock.Control(c, func(fd int) error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 0) })
	}}
	if l, err := lc.Listen(t.Context(), "tcp", addr); err == nil {
		l.Close()
		t.Fatal("bind without SO_REUSEADDR succeeded over TIME_WAIT; cannot show the difference")
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("bind without SO_REUSEADDR: %v, want EADDRINUSE", err)
	}

	ln2, err := Listen("tcp", addr, Config{})
	if err != nil {
		t.Fatalf("restart on %s with %d TIME_WAIT sockets: %v", addr, timeWaitOnPort(t, port), err)
	}
	defer ln2.Close()
	serve(t, ln2, hello)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := get(c, bufio.NewReader(c), "/", ""); err != nil {
		t.Fatalf("request after restart: %v", err)
	}
}

const emfileChildEnv = "CONNOPT_EMFILE_CHILD"

// TestEMFILE runs a server in a child process whose descriptor table the
// child fills on command, so that accept4 fails with EMFILE; the parent is
// the client and is not limited.
func TestEMFILE(t *testing.T) {
	if os.Getenv(emfileChildEnv) != "" {
		t.Skip("running as the child")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEMFILEChild$", "-test.v")
	cmd.Env = append(os.Environ(), emfileChildEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	out := bufio.NewScanner(stdout)
	expect := func(prefix string) string {
		t.Helper()
		for out.Scan() {
			if line := out.Text(); strings.HasPrefix(line, prefix) {
				return strings.TrimSpace(strings.TrimPrefix(line, prefix))
			}
		}
		t.Fatalf("child ended before %q: %v", prefix, out.Err())
		return ""
	}
	send := func(cmd string) { fmt.Fprintln(stdin, cmd) }
	stats := func() Stats {
		send("stats")
		var s Stats
		if err := json.Unmarshal([]byte(expect("stats ")), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	addr := expect("addr ")
	send("fill")
	t.Logf("child filled its table: %s", expect("filled "))

	var conns []net.Conn
	for i := range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /%d HTTP/1.1\r\nHost: test\r\n\r\n", i)
		conns = append(conns, c)
	}
	// Exhausted: nothing is served, but the accept loop neither dies nor
	// spins.
	conns[0].SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	if n, err := conns[0].Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read while the server is out of descriptors: %d, %v; want a timeout", n, err)
	}
	s := stats()
	t.Logf("while exhausted: %+v", s)
	if s.AcceptErrors["emfile"] == 0 {
		t.Fatal("no EMFILE counted")
	}
	// 1.5 s of back-off starting at 5 ms, doubling to the child's 200 ms
	// bound, is about a dozen attempts; a spinning loop makes thousands.
	if s.AcceptErrors["emfile"] > 40 {
		t.Fatalf("%d EMFILE errors in 1.5 s: the accept loop spins", s.AcceptErrors["emfile"])
	}

	send("release")
	expect("released")
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var resp fasthttp.Response
		if err := resp.Read(bufio.NewReader(c)); err != nil {
			t.Fatalf("conn %d after recovery: %v", i, err)
		}
		if want := fmt.Sprintf("/%d", i); string(resp.Body()) != want {
			t.Fatalf("conn %d: body %q, want %q", i, resp.Body(), want)
		}
	}
	if s := stats(); s.Accepted != 3 {
		t.Fatalf("accepted %d after recovery, want 3", s.Accepted)
	}

	// Close while Accept is sleeping in its back-off: Serve returns.
	send("fill")
	expect("filled ")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET / HTTP/1.1\r\nHost: test\r\n\r\n"))
	time.Sleep(300 * time.Millisecond)
	send("close")
	if got := expect("serve returned"); got != "after close" {
		t.Fatalf("Serve returned %q", got)
	}
	send("quit")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
}

func TestEMFILEChild(t *testing.T) {
	if os.Getenv(emfileChildEnv) == "" {
		t.Skip("only runs as TestEMFILE's child")
	}
	ln, err := Listen("tcp", "127.0.0.1:0", Config{DeferAccept: -1, MaxAcceptBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.Write(ctx.Path()) }, Logger: testkit.Logger{T: t}}
	served := make(chan error, 1)
	closed := false
	go func() { served <- srv.Serve(ln) }()
	fmt.Printf("addr %s\n", ln.Addr())

	// The soft limit sits just above what is open now, so filling is cheap.
	lim := unix.Rlimit{Cur: uint64(leakcheck.FDs(t) + 64), Max: 20000}
	var old unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &old)
	lim.Max = old.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var filler []*os.File
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "fill":
			for {
				f, err := os.Open(os.DevNull)
				if err != nil {
					if !errors.Is(err, syscall.EMFILE) {
						t.Fatalf("filling: %v", err)
					}
					break
				}
				filler = append(filler, f)
			}
			fmt.Printf("filled %d\n", len(filler))
		case "release":
			for _, f := range filler {
				f.Close()
			}
			filler = nil
			fmt.Println("released")
		case "stats":
			b, _ := json.Marshal(ln.Metrics().Snapshot())
			fmt.Printf("stats %s\n", b)
		case "close":
			closed = true
			ln.Close()
			select {
			case <-served:
				fmt.Println("serve returned after close")
			case <-time.After(5 * time.Second):
				fmt.Println("serve returned never")
			}
		case "quit":
			for _, f := range filler {
				f.Close()
			}
			if !closed {
				ln.Close()
			}
			return
		}
	}
}

// File and FileListener: the copy shares the socket and its options, and
// neither copy turns the socket blocking (the flag is shared between every
// process holding it: net.TCPListener.File would set it, and stock Go's
// File().Fd() would leave a child's accept stuck in the kernel).
func TestFileListener(t *testing.T) {
	fds := leakcheck.FDs(t)
	ln, err := Listen("tcp", "127.0.0.1:0", Config{Options: sockopt.Options{KeepAlive: 7 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	f.Fd() // what os/exec does with ExtraFiles
	nonblocking := func(what string, fd uintptr) {
		t.Helper()
		fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fl&unix.O_NONBLOCK == 0 {
			t.Errorf("%s: the socket turned blocking", what)
		}
	}
	nonblocking("File().Fd()", f.Fd())
	ln2, err := FileListener(f, Config{Options: sockopt.Options{KeepAlive: 7 * time.Second}, WrapConns: true})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if ln2.Addr().String() != ln.Addr().String() {
		t.Fatalf("FileListener on %v, want %v", ln2.Addr(), ln.Addr())
	}
	ln.Close() // the socket lives on in ln2
	c, s, err := testkit.Pair(ln2, func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*Conn); !ok {
		t.Errorf("accepted %T, want *Conn (WrapConns)", s)
	}
	if got := testkit.SockOptions(t, s.(syscall.Conn)); got.KeepIdle != 7*time.Second {
		t.Errorf("accepted socket keep-alive idle %v, want the 7s set on the original socket", got.KeepIdle)
	}
	c.Close()
	s.Close()

	// Keep-alive off, as configured, although the runtime turns it on for
	// a listener made from a file.
	f, err = ln2.File()
	if err != nil {
		t.Fatal(err)
	}
	ln3, err := FileListener(f, Config{Options: sockopt.Options{KeepAlive: -1}})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	ln2.Close()
	c, s, err = testkit.Pair(ln3, func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	if got := testkit.SockOptions(t, s.(syscall.Conn)); got.KeepAlive {
		t.Error("keep-alive on, want it off (KeepAlive -1)")
	}
	c.Close()
	s.Close()
	ln3.Close()

	// Not a TCP listener: a clear error, nothing left open.
	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	uf, err := u.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := FileListener(uf, Config{}); err == nil {
		t.Error("FileListener took a UDP socket")
	}
	uf.Close()
	u.Close()
	if _, err := FileListener(os.Stdin, Config{Backlog: -1}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Backlog -1: %v, want ErrInvalidConfig", err)
	}
	leakcheck.Settle(t, fds, -1)
}
