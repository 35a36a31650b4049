package testkit

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// helperEnv names the role a test binary runs in when a test starts it as
// a helper process (see StartHelper and HelperMode).
const helperEnv = "CONNOPT_TEST_HELPER"

// HelperMode is the role this test binary was started in by StartHelper,
// or "" in an ordinary test run. A package's TestMain runs the role
// instead of the tests when it is set.
func HelperMode() string { return os.Getenv(helperEnv) }

// SetHelperMode makes the processes this test starts from os.Args (a
// prefork Supervisor's children, say) run role mode, until the test ends.
func SetHelperMode(t testing.TB, mode string) { t.Setenv(helperEnv, mode) }

// Helper is a copy of the test binary running one role, started by
// StartHelper; its output (and that of processes it starts, which inherit
// it) is read line by line.
type Helper struct {
	Cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	more  chan struct{} // closed and replaced when a line arrives or output ends
	ended bool
	done  chan struct{} // closed when the helper has exited and been waited for
}

// Exited waits up to d for the helper to exit and returns its exit code
// (-1 if a signal ended it); it fails the test if the helper still runs.
func (h *Helper) Exited(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-h.done:
		return h.Cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("helper still running after %v", d)
		return 0
	}
}

// StartHelper runs the test binary in role mode with env added, running no
// test (TestMain dispatches on HelperMode). start, if non-nil, starts the
// command instead of Cmd.Start (to start it inside a namespace, say). The
// helper is killed, if still running, and waited for when the test ends.
func StartHelper(t testing.TB, mode string, env []string, start func(*exec.Cmd) error) *Helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+mode), env...)
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	// Processes the helper started hold the output pipe too: do not wait
	// for them for ever.
	cmd.WaitDelay = 10 * time.Second
	h := &Helper{Cmd: cmd, more: make(chan struct{}), done: make(chan struct{})}
	if start == nil {
		start = (*exec.Cmd).Start
	}
	if err := start(cmd); err != nil {
		t.Fatalf("starting helper %s: %v", mode, err)
	}
	go func() {
		cmd.Wait()
		w.Close()
		close(h.done)
	}()
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			h.mu.Lock()
			h.lines = append(h.lines, sc.Text())
			close(h.more)
			h.more = make(chan struct{})
			h.mu.Unlock()
		}
		io.Copy(io.Discard, r)
		h.mu.Lock()
		h.ended = true
		close(h.more)
		h.mu.Unlock()
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-h.done
		if t.Failed() {
			t.Logf("helper %s output:\n%s", mode, h.Output())
		}
	})
	return h
}

// Wait returns the submatches of the first line at or after line from that
// matches re, and the index of the line after it; it fails the test after
// d, or if the output ends first.
func (h *Helper) Wait(t testing.TB, from int, re *regexp.Regexp, d time.Duration) ([]string, int) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		for i := from; i < len(h.lines); i++ {
			if m := re.FindStringSubmatch(h.lines[i]); m != nil {
				h.mu.Unlock()
				return m, i + 1
			}
		}
		from = len(h.lines)
		more, ended := h.more, h.ended
		h.mu.Unlock()
		if ended {
			t.Fatalf("helper output ended without a line matching %q", re)
		}
		select {
		case <-more:
		case <-deadline.C:
			t.Fatalf("no helper line matching %q within %v", re, d)
		}
	}
}

// Lines is how many lines have been read so far.
func (h *Helper) Lines() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.lines)
}

// Output is everything read so far.
func (h *Helper) Output() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var s string
	for _, l := range h.lines {
		s += l + "\n"
	}
	return s
}
