package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/nsexec"
	"github.com/connopt/connopt/internal/procstat"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/internal/testns"
	"github.com/connopt/connopt/prefork"
)

const nsEnv = "CONNOPT_TEST_NS"

func TestMain(m *testing.M) {
	if testkit.HelperMode() == "server-prefork" {
		os.Exit(runServerPrefork())
	}
	os.Exit(m.Run())
}

// runServerPrefork is the helper: server.New with Prefork, listening in
// the test's namespace. Each response names the child's pid.
func runServerPrefork() int {
	s, err := New(func(ctx *fasthttp.RequestCtx) {
		fmt.Fprintf(ctx, "pid %d", os.Getpid())
	}, Config{
		Addr:      "127.0.0.1:0",
		Namespace: os.Getenv(nsEnv),
		Prefork:   &prefork.Config{Children: 2, StopTimeout: 10 * time.Second},
		Logger:    log.New(os.Stderr, "", log.LstdFlags),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	if err := s.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

// outRsts is the namespace's count of RST segments sent (Tcp OutRsts):
// by the servers and by the clients, since both are in it.
func outRsts(t *testing.T, ns string) int64 {
	t.Helper()
	var n int64
	err := nsexec.Do(ns, func() (err error) {
		n, err = procstat.NetCounter("Tcp", "OutRsts")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// handoverLoad counts what a user observes while generations hand over:
// requests on new connections and on keep-alive connections, none retried.
type handoverLoad struct {
	ok, failed, resets atomic.Int64
	mu                 sync.Mutex
	errs               []string
	pids               map[string]bool
}

func (l *handoverLoad) result(body []byte, err error) {
	if err == nil && !strings.HasPrefix(string(body), "pid ") {
		err = fmt.Errorf("body %q", body)
	}
	if err == nil {
		l.ok.Add(1)
		l.mu.Lock()
		l.pids[string(body)] = true
		l.mu.Unlock()
		return
	}
	l.failed.Add(1)
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		l.resets.Add(1)
	}
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, err.Error())
	}
	l.mu.Unlock()
}

// newConnGet is one GET on a connection of its own (Connection: close),
// read with net/http's parser.
func newConnGet(d *client.Dialer, addr string) ([]byte, error) {
	c, err := d.DialTimeout(addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return body, err
}

// Twenty hand-overs under a load of new-connection and keep-alive GETs:
// not one request fails, not one connection is reset (the namespace's RST
// counter, both ends), and every generation answered.
func TestPreforkHandoverLosesNothing(t *testing.T) {
	ns := testns.New(t, nil)
	h := testkit.StartHelper(t, "server-prefork", []string{nsEnv + "=" + ns.Path()}, nil)
	ready := func(from, gen int) (string, int) {
		m, next := h.Wait(t, from, regexp.MustCompile(fmt.Sprintf(`prefork: generation %d ready on (\S+): pids`, gen)), 60*time.Second)
		return m[1], next
	}
	addr, next := ready(0, 1)

	d, err := client.NewDialer(client.Config{Namespace: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	load := &handoverLoad{pids: map[string]bool{}}
	rsts := outRsts(t, ns.Path())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				load.result(newConnGet(d, addr))
			}
		})
	}
	var clients []*fasthttp.HostClient
	for range 3 {
		hc := &fasthttp.HostClient{Addr: addr, Dial: d.Dial, MaxConns: 1, MaxIdemponentCallAttempts: 1,
			ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
		clients = append(clients, hc)
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, body, err := hc.Get(nil, "http://"+addr+"/")
				load.result(body, err)
			}
		})
	}

	const handovers = 20
	for gen := 2; gen <= handovers+1; gen++ {
		before := load.ok.Load()
		if err := h.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		_, next = ready(next, gen)
		_, next = h.Wait(t, next, regexp.MustCompile(fmt.Sprintf(`prefork: generation %d stopped`, gen-1)), 60*time.Second)
		testkit.Eventually(t, "requests answered after the hand-over", func() bool { return load.ok.Load() > before+50 })
	}
	close(stop)
	wg.Wait()
	for _, hc := range clients {
		hc.CloseIdleConnections()
	}
	sent := outRsts(t, ns.Path()) - rsts

	t.Logf("%d hand-overs: %d requests answered by %d processes, %d failed, %d reset; RSTs sent in the namespace: %d",
		handovers, load.ok.Load(), len(load.pids), load.failed.Load(), load.resets.Load(), sent)
	if load.failed.Load() != 0 {
		t.Errorf("%d requests failed (%d reset): %v", load.failed.Load(), load.resets.Load(), load.errs)
	}
	if sent != 0 {
		t.Errorf("%d RST segments sent during the hand-overs, want 0", sent)
	}
	// Two children per generation, each of which should have answered.
	if len(load.pids) < 2*(handovers+1)*3/4 {
		t.Errorf("answered by %d processes over %d generations of 2", len(load.pids), handovers+1)
	}
	if strings.Contains(h.Output(), "killing it") {
		t.Error("a child had to be killed to stop")
	}
}
