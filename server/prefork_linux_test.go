package server

import (
	"context"
	"fmt"
	"log"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/httpload"
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
		Addr:        "127.0.0.1:0",
		MetricsAddr: "127.0.0.1:9300", // child k on 9300+k, in the test's own namespace
		Namespace:   os.Getenv(nsEnv),
		Prefork:     &prefork.Config{Children: 2, StopTimeout: 10 * time.Second},
		Logger:      log.New(os.Stderr, "", log.LstdFlags),
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
	// Each child serves its metrics on a port of its own.
	for k := range 2 {
		maddr := fmt.Sprintf("127.0.0.1:%d", 9300+k)
		hc := &fasthttp.HostClient{Addr: maddr, Dial: d.Dial}
		status, body, err := hc.GetTimeout(nil, "http://"+maddr+"/metrics", 5*time.Second)
		hc.CloseIdleConnections()
		if err != nil || status != 200 || !strings.Contains(string(body), "connopt_listener_accepted_connections_total") {
			t.Fatalf("child %d's metrics on %s: %d %v", k, maddr, status, err)
		}
	}
	rsts := outRsts(t, ns.Path())
	load := httpload.Start(addr, d.Dial, 3, "pid ")

	const handovers = 20
	for gen := 2; gen <= handovers+1; gen++ {
		before := load.OK.Load()
		if err := h.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		_, next = ready(next, gen)
		_, next = h.Wait(t, next, regexp.MustCompile(fmt.Sprintf(`prefork: generation %d stopped`, gen-1)), 60*time.Second)
		testkit.Eventually(t, "requests answered after the hand-over", func() bool { return load.OK.Load() > before+50 })
	}
	load.Stop()
	sent := outRsts(t, ns.Path()) - rsts

	t.Logf("%d hand-overs: %d requests answered by %d processes, %d failed, %d reset; RSTs sent in the namespace: %d",
		handovers, load.OK.Load(), load.Bodies(), load.Failed(), load.Resets.Load(), sent)
	if load.Failed() != 0 {
		t.Errorf("%d requests failed (%d reset): %v", load.Failed(), load.Resets.Load(), load.Errors())
	}
	if sent != 0 {
		t.Errorf("%d RST segments sent during the hand-overs, want 0", sent)
	}
	// Two children per generation, each of which should have answered.
	if load.Bodies() < 2*(handovers+1)*3/4 {
		t.Errorf("answered by %d processes over %d generations of 2", load.Bodies(), handovers+1)
	}
	if strings.Contains(h.Output(), "killing it") {
		t.Error("a child had to be killed to stop")
	}
}
