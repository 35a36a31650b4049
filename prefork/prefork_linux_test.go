package prefork_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/httpload"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/listener"
	"github.com/connopt/connopt/prefork"
)

// brokenEnv names a file whose existence makes a child exit before it
// accepts: a new binary that fails to start. hangEnv names a file whose
// existence makes a child hang before it accepts: a new binary stuck at
// start.
const (
	brokenEnv = "CONNOPT_TEST_BROKEN"
	hangEnv   = "CONNOPT_TEST_HANG"
)

func TestMain(m *testing.M) {
	switch testkit.HelperMode() {
	case "prefork-fasthttp":
		os.Exit(runPreforkFasthttp(false))
	case "prefork-serve-shutdown":
		os.Exit(runPreforkFasthttp(true))
	}
	os.Exit(m.Run())
}

// runPreforkFasthttp is the helper: plain fasthttp behind
// prefork.ServeFasthttp, as the README has a fasthttp user write it, or,
// with shutdown, behind prefork.Serve calling fasthttp's Shutdown on the
// context (the way that loses requests on a hand-over: the control). Each
// response names the child's pid; /slow answers after 2 s.
func runPreforkFasthttp(shutdown bool) int {
	if prefork.Child() {
		if _, err := os.Stat(os.Getenv(brokenEnv)); err == nil {
			fmt.Fprintln(os.Stderr, "child: broken on purpose")
			return 3
		}
		if hang := os.Getenv(hangEnv); hang != "" {
			if _, err := os.Stat(hang); err == nil {
				if f, err := os.OpenFile(hang+".pids", os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
					fmt.Fprintln(f, os.Getpid())
					f.Close()
				}
				fmt.Fprintln(os.Stderr, "child: hanging on purpose")
				time.Sleep(time.Hour)
			}
		}
	}
	cfg := prefork.Config{Children: 2, StartTimeout: 20 * time.Second, StopTimeout: 5 * time.Second, RestartDelay: 50 * time.Millisecond}
	s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			fmt.Fprintln(os.Stderr, "child: slow request in the handler")
			time.Sleep(2 * time.Second)
		}
		fmt.Fprintf(ctx, "pid %d slot %d", os.Getpid(), prefork.Slot())
	}}
	var err error
	if shutdown {
		err = prefork.Serve("tcp", "127.0.0.1:0", cfg, func(ctx context.Context, ln net.Listener) error {
			go func() {
				<-ctx.Done()
				s.Shutdown()
			}()
			return s.Serve(ln)
		})
	} else {
		err = prefork.ServeFasthttp("tcp", "127.0.0.1:0", cfg, s)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

var (
	readyLine = regexp.MustCompile(`prefork: generation (\d+) ready on (\S+): pids \[(\d+) (\d+)\]`)
	pidBody   = regexp.MustCompile(`^pid (\d+) slot (\d)$`)
)

// ready waits for generation gen and returns its address and pids.
func ready(t *testing.T, h *testkit.Helper, from, gen int) (addr string, pids [2]int, next int) {
	t.Helper()
	m, next := h.Wait(t, from, regexp.MustCompile(strings.Replace(readyLine.String(), `(\d+)`, strconv.Itoa(gen), 1)), 30*time.Second)
	pids[0], _ = strconv.Atoi(m[2])
	pids[1], _ = strconv.Atoi(m[3])
	return m[1], pids, next
}

// get makes one request on a new connection and returns the pid that
// answered.
func get(t *testing.T, addr string) int {
	t.Helper()
	_, body := testkit.Get(t, "http://"+addr+"/")
	m := pidBody.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("response %q", body)
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// answering makes n requests and returns the set of pids that answered.
func answering(t *testing.T, addr string, n int) map[int]bool {
	t.Helper()
	seen := map[int]bool{}
	for range n {
		seen[get(t, addr)] = true
	}
	return seen
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie (state Z) has exited; it waits for a parent to reap it.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

func TestServeRestartsAKilledChild(t *testing.T) {
	h := testkit.StartHelper(t, "prefork-fasthttp", nil, nil)
	addr, pids, next := ready(t, h, 0, 1)
	if seen := answering(t, addr, 60); !seen[pids[0]] || !seen[pids[1]] || len(seen) != 2 {
		t.Fatalf("answered by %v, want both children %v", seen, pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	m, _ := h.Wait(t, next, regexp.MustCompile(`prefork: slot 0 restarted: pid (\d+)`), 10*time.Second)
	restarted, _ := strconv.Atoi(m[1])
	if restarted == pids[0] || !alive(restarted) {
		t.Fatalf("slot 0 restarted as pid %d (killed %d)", restarted, pids[0])
	}
	testkit.Eventually(t, "the restarted child answering", func() bool { return answering(t, addr, 10)[restarted] })
	if seen := answering(t, addr, 60); seen[pids[0]] || len(seen) != 2 {
		t.Fatalf("answered by %v after the restart, want %d and %d", seen, restarted, pids[1])
	}
}

func TestUpgradeAndStop(t *testing.T) {
	broken := filepath.Join(t.TempDir(), "broken")
	h := testkit.StartHelper(t, "prefork-fasthttp", []string{brokenEnv + "=" + broken}, nil)
	addr, old, next := ready(t, h, 0, 1)

	// SIGHUP: a new generation serves, the old one is gone.
	if err := h.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	_, pids, next := ready(t, h, next, 2)
	_, next = h.Wait(t, next, regexp.MustCompile(`prefork: generation 1 stopped`), 30*time.Second)
	for _, p := range old {
		if alive(p) {
			t.Errorf("generation 1 child %d still running", p)
		}
	}
	if seen := answering(t, addr, 40); len(seen) != 2 || !seen[pids[0]] || !seen[pids[1]] {
		t.Fatalf("answered by %v, want generation 2 %v", seen, pids)
	}

	// A new binary that fails to start: the upgrade is abandoned and the
	// serving generation goes on.
	if err := os.WriteFile(broken, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	_, next = h.Wait(t, next, regexp.MustCompile(`upgrade abandoned, the serving generation goes on: prefork: generation 3: child \d \(pid \d+\) exited before accepting: exit status 3`), 30*time.Second)
	if seen := answering(t, addr, 40); len(seen) != 2 || !seen[pids[0]] || !seen[pids[1]] {
		t.Fatalf("answered by %v after a failed upgrade, want generation 2 %v", seen, pids)
	}
	os.Remove(broken)

	// SIGTERM: the children stop, the supervisor exits 0, the port closes.
	if err := h.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	h.Wait(t, next, regexp.MustCompile(`prefork: stopped`), 30*time.Second)
	// Every child stopped on SIGTERM: none had to be killed (a child
	// stuck in a blocking accept(2) would be, after StopTimeout).
	if out := h.Output(); strings.Contains(out, "killing it") {
		t.Errorf("a child had to be killed:\n%s", out)
	}
	if code := h.Exited(t, 10*time.Second); code != 0 {
		t.Errorf("supervisor exit code %d after SIGTERM, want 0", code)
	}
	for _, p := range pids {
		if alive(p) {
			t.Errorf("child %d still running after the supervisor stopped", p)
		}
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("the address still accepts after the stop")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after the stop: %v, want connection refused", err)
	}
}

// A supervisor killed outright takes its children with it (the kernel
// sends them SIGTERM): no orphan keeps serving an old binary.
func TestChildrenStopWithTheSupervisor(t *testing.T) {
	h := testkit.StartHelper(t, "prefork-fasthttp", nil, nil)
	_, pids, _ := ready(t, h, 0, 1)
	if err := h.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the children exiting", func() bool { return !alive(pids[0]) && !alive(pids[1]) })
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []prefork.Config{
		{Children: -1}, {StartTimeout: -1}, {StopTimeout: -time.Second}, {RestartDelay: -1},
		{Listener: listener.Config{Backlog: -1}},
	} {
		s, err := prefork.New("tcp", "127.0.0.1:0", cfg)
		if !errors.Is(err, prefork.ErrInvalidConfig) {
			t.Errorf("%+v: %v, want ErrInvalidConfig", cfg, err)
		}
		if s != nil {
			t.Errorf("%+v: a Supervisor with the error", cfg)
		}
	}
	if _, err := prefork.New("udp", "127.0.0.1:0", prefork.Config{}); err == nil {
		t.Error("udp accepted")
	}
	if _, err := prefork.Listener(listener.Config{}); !errors.Is(err, prefork.ErrNotChild) {
		t.Errorf("Listener outside a child: %v, want ErrNotChild", err)
	}
	s, err := prefork.New("tcp", "127.0.0.1:0", prefork.Config{Children: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Upgrade(); err == nil {
		t.Error("Upgrade before Run succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", s.Addr().String()); err == nil {
		c.Close()
		t.Error("the address accepts after Close")
	}
}

// A new binary that hangs at start: SIGTERM during the hand-over stops
// everything at once (it waited out StartTimeout, 20 s here, before the
// supervisor was one event loop); a serving child that dies meanwhile is
// restarted at once; a second SIGHUP is refused and logged.
func TestHandoverIsAState(t *testing.T) {
	hang := filepath.Join(t.TempDir(), "hang")
	h := testkit.StartHelper(t, "prefork-fasthttp", []string{hangEnv + "=" + hang}, nil)
	addr, pids, next := ready(t, h, 0, 1)
	if err := os.WriteFile(hang, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	_, next = h.Wait(t, next, regexp.MustCompile(`child: hanging on purpose`), 30*time.Second)

	if err := h.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	_, next = h.Wait(t, next, regexp.MustCompile(`prefork: SIGHUP: prefork: an upgrade is in progress: generation 2 is still starting; the request is refused`), 5*time.Second)

	// A restart starts the file at the executable's path too: that one
	// starts normally.
	os.Remove(hang)
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Within 10 s: the restart waits 50 ms, a child starts in well under
	// a second; the hand-over's StartTimeout is 20 s.
	m, next := h.Wait(t, next, regexp.MustCompile(`prefork: slot 0 restarted: pid (\d+)`), 10*time.Second)
	restarted, _ := strconv.Atoi(m[1])
	testkit.Eventually(t, "the restarted child answering", func() bool { return answering(t, addr, 10)[restarted] })

	stopped := time.Now()
	if err := h.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	h.Wait(t, next, regexp.MustCompile(`prefork: stopped`), 10*time.Second)
	if code := h.Exited(t, 5*time.Second); code != 0 {
		t.Errorf("supervisor exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("stopped %v after SIGTERM during the hand-over (StartTimeout 20 s)", time.Since(stopped).Round(time.Millisecond))
	for _, p := range []int{pids[1], restarted} {
		if alive(p) {
			t.Errorf("child %d still running after the stop", p)
		}
	}
}

// Upgrade refuses a second hand-over while one is starting, and a child of
// the new generation dying abandons it at once (not at StartTimeout); a
// later Upgrade then succeeds. The supervisor runs in this process; its
// children are helpers.
func TestUpgradeInProgress(t *testing.T) {
	hang := filepath.Join(t.TempDir(), "hang")
	testkit.SetHelperMode(t, "prefork-fasthttp")
	t.Setenv(hangEnv, hang)
	s, err := prefork.New("tcp", "127.0.0.1:0", prefork.Config{Children: 2, StartTimeout: 20 * time.Second,
		StopTimeout: 5 * time.Second, DisableSignals: true, Logger: testkit.Logger{T: t}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	testkit.EventuallyWithin(t, 30*time.Second, "generation 1 serving", func() bool { return s.Stats().Generation == 1 })
	if err := os.WriteFile(hang, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- s.Upgrade() }()
	var hanging []int
	testkit.EventuallyWithin(t, 30*time.Second, "generation 2 hanging at start", func() bool {
		b, _ := os.ReadFile(hang + ".pids")
		hanging = hanging[:0]
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			hanging = append(hanging, pid)
		}
		return len(hanging) == 2
	})
	if err := s.Upgrade(); !errors.Is(err, prefork.ErrUpgradeInProgress) {
		t.Fatalf("a second Upgrade during a hand-over: %v, want ErrUpgradeInProgress", err)
	}
	if err := syscall.Kill(hanging[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-first:
		if err == nil || !strings.Contains(err.Error(), "exited before accepting") {
			t.Fatalf("Upgrade with a new child killed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Upgrade still waiting 10 s after a new child died (StartTimeout 20 s)")
	}
	if st := s.Stats(); st.Generation != 1 || st.FailedUpgrades != 1 {
		t.Fatalf("after the abandoned hand-over: %+v", st)
	}
	testkit.Eventually(t, "the other hanging child stopped", func() bool { return !alive(hanging[1]) })
	os.Remove(hang)
	if err := s.Upgrade(); err != nil {
		t.Fatalf("Upgrade after the abandoned one: %v", err)
	}
	if st := s.Stats(); st.Generation != 2 || st.Upgrades != 1 {
		t.Fatalf("after the hand-over: %+v", st)
	}
	cancel()
	testkit.Returns(t, runErr, 10*time.Second, "Run")
}

// A full stop refuses new connections at once, while children still
// finish a request in flight, as a stop without prefork does (net.Listen's
// server, closing its listener, is the control): before, the supervisor
// kept its copies of the sockets until every child had exited, so the
// kernel queued new connections nobody would accept, then reset them.
func TestStopRefusesNewConnections(t *testing.T) {
	h := testkit.StartHelper(t, "prefork-fasthttp", nil, nil)
	addr, _, next := ready(t, h, 0, 1)
	slow := make(chan error, 1)
	go func() {
		status, body, err := fasthttp.GetTimeout(nil, "http://"+addr+"/slow", 10*time.Second)
		if err == nil && (status != 200 || !pidBody.Match(body)) {
			err = fmt.Errorf("%d %q", status, body)
		}
		slow <- err
	}()
	h.Wait(t, next, regexp.MustCompile(`child: slow request in the handler`), 10*time.Second)
	if err := h.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	refused := false
	for !refused {
		select {
		case err := <-slow:
			t.Fatalf("the request in flight ended (%v) and new connections were still not refused", err)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial during the stop: %v, want connection refused", err)
		}
		refused = true
	}
	if err := <-slow; err != nil {
		t.Fatalf("the request in flight at the stop: %v", err)
	}
	if code := h.Exited(t, 10*time.Second); code != 0 {
		t.Errorf("supervisor exit code %d", code)
	}
}

// Ten hand-overs under a load of new-connection and keep-alive GETs (no
// retries) through prefork.ServeFasthttp: not one request fails. The way
// the README showed before, prefork.Serve calling fasthttp's Shutdown, is
// the control (its failures are logged: they race the load).
func TestServeFasthttpHandoverLosesNothing(t *testing.T) {
	for _, mode := range []string{"prefork-serve-shutdown", "prefork-fasthttp"} {
		h := testkit.StartHelper(t, mode, nil, nil)
		addr, _, next := ready(t, h, 0, 1)
		load := httpload.Start(addr, fasthttp.Dial, 3, "pid ")
		const handovers = 10
		for gen := 2; gen <= handovers+1; gen++ {
			before := load.OK.Load()
			if err := h.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			_, _, next = ready(t, h, next, gen)
			_, next = h.Wait(t, next, regexp.MustCompile(fmt.Sprintf(`prefork: generation %d stopped`, gen-1)), 30*time.Second)
			testkit.Eventually(t, "requests answered after the hand-over", func() bool { return load.OK.Load() > before+50 })
		}
		load.Stop()
		t.Logf("%s: %d hand-overs, %d requests answered by %d processes, %d failed (%d new-connection, %d keep-alive)",
			mode, handovers, load.OK.Load(), load.Bodies(), load.Failed(), load.FailedNew.Load(), load.FailedKeepAlive.Load())
		if mode == "prefork-fasthttp" && load.Failed() != 0 {
			t.Errorf("ServeFasthttp: %d requests failed: %v", load.Failed(), load.Errors())
		}
		h.Cmd.Process.Signal(syscall.SIGTERM)
		h.Exited(t, 10*time.Second)
	}
}

// A second SIGTERM during the stop kills the children at once, without
// waiting for a request in flight or StopTimeout.
func TestSecondSignalKills(t *testing.T) {
	h := testkit.StartHelper(t, "prefork-fasthttp", nil, nil)
	addr, pids, next := ready(t, h, 0, 1)
	slow := make(chan error, 1)
	go func() {
		_, _, err := fasthttp.GetTimeout(nil, "http://"+addr+"/slow", 10*time.Second)
		slow <- err
	}()
	_, next = h.Wait(t, next, regexp.MustCompile(`child: slow request in the handler`), 10*time.Second)
	if err := h.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_, next = h.Wait(t, next, regexp.MustCompile(`prefork: terminated: stopping`), 5*time.Second)
	if err := h.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	h.Wait(t, next, regexp.MustCompile(`prefork: terminated again: killing the children`), 5*time.Second)
	h.Wait(t, next, regexp.MustCompile(`prefork: stopped`), 10*time.Second)
	// The child was killed in the middle of the 2 s request: without the
	// second signal it would have drained and answered it.
	if err := <-slow; err == nil {
		t.Error("the request in flight was answered: the child was not killed")
	}
	for _, p := range pids {
		if alive(p) {
			t.Errorf("child %d still running", p)
		}
	}
}
