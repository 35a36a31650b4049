package reliability

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/listener"
)

const emfileEnv = "CONNOPT_RELIABILITY_EMFILE_CHILD"

// Descriptor exhaustion in a child process whose RLIMIT_NOFILE the child
// lowers and fills: a keep-alive connection accepted before keeps being
// served; the dialer (which makes its sockets itself in the process's
// namespace) fails with EMFILE at once, with stock net.Dialer's error; once
// descriptors are free both recover.
func TestDescriptorExhaustion(t *testing.T) {
	if os.Getenv(emfileEnv) != "" {
		emfileChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDescriptorExhaustion$", "-test.v")
	cmd.Env = append(os.Environ(), emfileEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("child failed: %v", err)
	}
	if !strings.Contains(string(out), "CHILD-OK") {
		t.Fatal("child did not finish")
	}
}

func emfileChild(t *testing.T) {
	ln, err := listener.Listen("tcp4", "127.0.0.1:0", listener.Config{DeferAccept: -1, MaxAcceptBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") }, Logger: testkit.Quiet{}}
	go srv.Serve(ln)
	defer srv.Shutdown()
	d, err := client.NewDialer(client.Config{PoolSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	// A keep-alive connection accepted while descriptors are plentiful.
	ka, err := d.Dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ka.Close()
	br := bufio.NewReader(ka)
	get := func() error {
		ka.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(ka, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		var resp fasthttp.Response
		return resp.Read(br)
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the pool refills to 4

	var old unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &old)
	lim := unix.Rlimit{Cur: uint64(leakcheck.FDs(t) + 32), Max: old.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var filler []*os.File
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		filler = append(filler, f)
	}

	// Out of descriptors: the accepted connection is still served.
	for i := range 5 {
		if err := get(); err != nil {
			t.Fatalf("keep-alive request %d while out of descriptors: %v", i, err)
		}
	}
	// Dials fail with EMFILE, promptly, as net.Dialer's do.
	_, stockErr := (&net.Dialer{}).Dial("tcp", ln.Addr().String())
	var dialErr error
	var held []net.Conn
	for range 10 {
		c, err := d.Dial(ln.Addr().String())
		if err != nil {
			dialErr = err
			break
		}
		held = append(held, c)
	}
	if !errors.Is(dialErr, syscall.EMFILE) {
		t.Fatalf("dial while out of descriptors: %v, want EMFILE", dialErr)
	}
	t.Logf("out of descriptors: %d dials, then: %v", len(held), dialErr)
	if stockErr == nil || dialErr.Error() != stockErr.Error() {
		t.Fatalf("dial while out of descriptors: %q; stock net.Dialer: %q", dialErr, stockErr)
	}
	for _, c := range held {
		c.Close()
	}
	for _, f := range filler {
		f.Close()
	}
	// Descriptors are back: dials work.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := d.Dial(ln.Addr().String())
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dialer did not recover: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	fmt.Println("CHILD-OK")
}
