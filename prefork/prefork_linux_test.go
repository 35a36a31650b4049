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

	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/listener"
	"github.com/connopt/connopt/prefork"
)

// brokenEnv names a file whose existence makes a child exit before it
// accepts: a new binary that fails to start.
const brokenEnv = "CONNOPT_TEST_BROKEN"

func TestMain(m *testing.M) {
	if testkit.HelperMode() == "prefork-fasthttp" {
		os.Exit(runPreforkFasthttp())
	}
	os.Exit(m.Run())
}

// runPreforkFasthttp is the helper: plain fasthttp behind prefork.Serve, as
// a fasthttp user would write it. Each response names the child's pid.
func runPreforkFasthttp() int {
	if prefork.Child() {
		if _, err := os.Stat(os.Getenv(brokenEnv)); err == nil {
			fmt.Fprintln(os.Stderr, "child: broken on purpose")
			return 3
		}
	}
	cfg := prefork.Config{Children: 2, StartTimeout: 20 * time.Second, StopTimeout: 5 * time.Second, RestartDelay: 50 * time.Millisecond}
	err := prefork.Serve("tcp", "127.0.0.1:0", cfg, func(ctx context.Context, ln net.Listener) error {
		s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
			fmt.Fprintf(ctx, "pid %d slot %d", os.Getpid(), prefork.Slot())
		}}
		go func() {
			<-ctx.Done()
			s.Shutdown()
		}()
		return s.Serve(ln)
	})
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
