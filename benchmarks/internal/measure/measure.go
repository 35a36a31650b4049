// Package measure holds what connopt's benchmark harnesses share: counting a
// process's syscalls with perf tracepoints, medians, and running setup
// commands.
package measure

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/connopt/connopt/internal/testkit"
)

// Syscalls counts the syscalls of process pid while run runs, with perf
// tracepoints on each of its threads: "total" (raw_syscalls:sys_enter) and
// one entry per name in kinds (syscalls:sys_enter_NAME), summed over every
// thread; "busiest", the total of the thread that made the most (the one
// doing the work, for a single-goroutine loop), and "threads", how many made
// any. Each count is divided by the units run reports (requests,
// connections).
func Syscalls(pid int, kinds []string, run func() (units float64, err error)) (map[string]float64, error) {
	out := filepath.Join(os.TempDir(), fmt.Sprintf("connopt-perf-%d-%d.txt", pid, time.Now().UnixNano()))
	defer os.Remove(out)
	events := []string{"raw_syscalls:sys_enter"}
	for _, k := range kinds {
		events = append(events, "syscalls:sys_enter_"+k)
	}
	perf := exec.Command("perf", "stat", "--per-thread", "-x,", "-e", strings.Join(events, ","), "-p", strconv.Itoa(pid), "-o", out)
	perf.Stderr = os.Stderr
	if err := perf.Start(); err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond) // perf attaches asynchronously
	units, rerr := run()
	perf.Process.Signal(syscall.SIGINT)
	perf.Wait()
	if rerr != nil {
		return nil, rerr
	}
	if units <= 0 {
		return nil, fmt.Errorf("measure: nothing was counted (%v units)", units)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	// --per-thread lines: "comm-tid,count,,event,...".
	m := map[string]float64{}
	perThread := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 4 || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(f[1], "<not") {
			continue // a thread that ended before perf read it
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return nil, fmt.Errorf("perf: %q: %w", line, err)
		}
		switch ev := f[3]; {
		case ev == "raw_syscalls:sys_enter":
			m["total"] += v / units
			perThread[f[0]] += v / units
		case strings.HasPrefix(ev, "syscalls:sys_enter_"):
			m[strings.TrimPrefix(ev, "syscalls:sys_enter_")] += v / units
		}
	}
	for _, v := range perThread {
		m["busiest"] = max(m["busiest"], v)
		if v > 0 {
			m["threads"]++
		}
	}
	if _, ok := m["total"]; !ok {
		return nil, fmt.Errorf("perf counted nothing:\n%s", b)
	}
	return m, nil
}

// Median of xs; 0 when empty.
func Median[T int64 | float64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Micros is d in microseconds.
func Micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// Run runs a setup command and returns its output in the error when it fails.
func Run(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// NewSink holds the connections accepted on ln until CloseAll: the
// destination a harness fills a port range against.
func NewSink(ln net.Listener) *testkit.Sink { return testkit.NewSink(ln) }

// Fill is a port range filled by dialing one destination.
type Fill struct {
	Durs    []time.Duration // per dial, in order
	Reached int             // connections made
	StopErr error           // the dial error that stopped the fill, if any
}

// FillRange dials dst until n connections are made or a dial fails, timing
// each dial, then closes everything with RST so that no TIME_WAIT is left
// for the next method.
func FillRange(dial func(string) (net.Conn, error), dst string, n int) Fill {
	var f Fill
	conns := make([]net.Conn, 0, n)
	for range n {
		t0 := time.Now()
		c, err := dial(dst)
		d := time.Since(t0)
		if err != nil {
			f.StopErr = err
			break
		}
		f.Durs = append(f.Durs, d)
		conns = append(conns, c)
	}
	f.Reached = len(conns)
	for _, c := range conns {
		if l, ok := c.(interface{ SetLinger(int) error }); ok {
			l.SetLinger(0)
		}
		c.Close()
	}
	return f
}

// Window returns, sorted, the dial times around an occupancy fraction at
// of a range of size ports (±2.5% of the range); nil if the fill did not
// get there.
func (f Fill) Window(size int, at float64) []time.Duration {
	lo := int((at - 0.025) * float64(size))
	hi := min(int((at+0.025)*float64(size)), len(f.Durs))
	if lo < 0 || lo >= hi {
		return nil
	}
	w := slices.Clone(f.Durs[lo:hi])
	slices.Sort(w)
	return w
}

// Pct is the p-quantile (0..1) of sorted values; 0 for none.
func Pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// Machine is the line a results table starts with: "Linux 6.x, go1.x, N
// cores, YYYY-MM-DD".
func Machine() string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("Linux %s, %s, %d cores, %s", strings.TrimSpace(string(kernel)), runtime.Version(), runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"))
}
