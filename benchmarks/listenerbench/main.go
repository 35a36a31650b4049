// Command listenerbench compares hello-world fasthttp on a stock net.Listen
// listener with fasthttp on connopt's listener, following
// shared/BENCHMARKING.md: the server pinned to core 0 with GOMAXPROCS=1, wrk
// pinned to core 1, runs alternated (stock, connopt, stock, connopt, ...),
// syscalls counted with perf tracepoints on the server process, and server
// CPU read from /proc/PID/stat. It prints a Markdown table and writes it to
// -out.
//
// Two loads: keep-alive (50 connections) and churn (every request on a new
// connection, "Connection: close"), so figures are per request and per
// connection respectively.
//
// It needs wrk, perf (Debian: linux-perf) and taskset, and root (or
// perf_event_paranoid <= 1) for the tracepoints.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
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

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/listener"
)

// The syscalls reported by kind; "total" is raw_syscalls:sys_enter.
var kinds = []string{"read", "write", "writev", "setsockopt", "getsockopt", "getsockname", "accept4", "epoll_ctl", "epoll_pwait", "close"}

// The servers compared, in alternation order. "connopt-bare" (diagnostic,
// not in the default set) accepts with listener but hands fasthttp the bare
// *net.TCPConn, which isolates the cost of the Conn wrapper.
var servers = []string{"stock", "connopt"}

type load struct {
	name, unit string
	wrkArgs    []string
}

var loads = []load{
	{"keep-alive", "request", nil},
	{"churn", "connection", []string{"-H", "Connection: close"}},
}

type sample struct {
	requests  float64            // in the uncounted run
	rps       float64            // in the uncounted run
	cpuTicks  float64            // server utime+stime in the uncounted run
	syscalls  map[string]float64 // per request (or connection) in the counted run
	sockErros string
}

func main() {
	serve := flag.String("serve", "", "internal: run a server (stock or connopt) and print its address")
	addr := flag.String("addr", "127.0.0.1:0", "address the servers listen on")
	dur := flag.Duration("d", 5*time.Second, "duration of each wrk run")
	rounds := flag.Int("rounds", 5, "alternated rounds per server and load")
	conns := flag.Int("c", 50, "wrk connections")
	out := flag.String("out", "", "also write the table to this file")
	serverList := flag.String("servers", strings.Join(servers, ","), "servers to compare, the first is the baseline: stock, connopt, connopt-bare")
	loadList := flag.String("loads", "keep-alive,churn", "loads to run")
	flag.Parse()
	servers = strings.Split(*serverList, ",")
	loads = slices.DeleteFunc(loads, func(l load) bool { return !slices.Contains(strings.Split(*loadList, ","), l.name) })

	if *serve != "" {
		runServer(*serve, *addr)
		return
	}
	if err := checkTools(); err != nil {
		log.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	results := map[string]map[string][]sample{}
	for _, ld := range loads {
		results[ld.name] = map[string][]sample{}
		for r := range *rounds {
			for _, srv := range servers {
				s, err := runOnce(self, srv, *addr, ld, *dur, *conns)
				if err != nil {
					log.Fatalf("%s, %s, round %d: %v", srv, ld.name, r+1, err)
				}
				fmt.Fprintf(os.Stderr, "%-10s %-8s round %d: %8.0f req/s, %6.2f syscalls/%s, %5.1f µs CPU/%s%s\n",
					ld.name, srv, r+1, s.rps, s.syscalls["total"], ld.unit, cpuMicros(s), ld.unit, s.sockErros)
				results[ld.name][srv] = append(results[ld.name][srv], s)
			}
		}
	}
	table := render(results, *dur, *rounds, *conns)
	fmt.Print(table)
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(*out, []byte(table), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

func checkTools() error {
	var missing []string
	for _, tool := range []string{"wrk", "perf", "taskset"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s; on Debian: apt-get install -y wrk linux-perf util-linux (make bench-deps)", strings.Join(missing, ", "))
	}
	if runtime.NumCPU() < 2 {
		return errors.New("needs 2 cores: one for the server, one for wrk")
	}
	return nil
}

func runServer(kind, addr string) {
	var ln net.Listener
	var err error
	switch kind {
	case "stock":
		ln, err = net.Listen("tcp4", addr)
	case "connopt":
		ln, err = listener.Listen("tcp4", addr, nil)
	case "connopt-bare":
		var l *listener.Listener
		l, err = listener.Listen("tcp4", addr, nil)
		ln = bareListener{l}
	default:
		err = fmt.Errorf("unknown server %q", kind)
	}
	if err != nil {
		log.Fatal(err)
	}
	s := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("text/plain")
			ctx.WriteString("Hello, World!")
		},
		Name: "bench",
	}
	fmt.Printf("ready %s\n", ln.Addr())
	log.Fatal(s.Serve(ln))
}

type bareListener struct{ *listener.Listener }

func (l bareListener) Accept() (net.Conn, error) {
	c, err := l.AcceptConn()
	if err != nil {
		return nil, err
	}
	return c.TCPConn, nil
}

func runOnce(self, srv, addr string, ld load, dur time.Duration, conns int) (sample, error) {
	cmd := exec.Command("taskset", "-c", "0", self, "-serve", srv, "-addr", addr)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return sample{}, err
	}
	if err := cmd.Start(); err != nil {
		return sample{}, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "ready ") {
		return sample{}, fmt.Errorf("server did not start: %q", sc.Text())
	}
	url := "http://" + strings.TrimPrefix(sc.Text(), "ready ") + "/"
	pid := cmd.Process.Pid

	// Warm up, so that the runtime's threads exist before perf attaches.
	if _, err := wrk(url, ld, time.Second, conns); err != nil {
		return sample{}, err
	}
	// CPU and throughput come from a run without perf attached: counting
	// tracepoints costs the server several µs per syscall, more for the
	// server that makes more of them.
	ticks0, err := cpuTicks(pid)
	if err != nil {
		return sample{}, err
	}
	res, err := wrk(url, ld, dur, conns)
	if err != nil {
		return sample{}, err
	}
	ticks1, err := cpuTicks(pid)
	if err != nil {
		return sample{}, err
	}
	res.cpuTicks = ticks1 - ticks0

	// Syscalls come from a second run of the same length, counted exactly.
	perfOut := filepath.Join(os.TempDir(), fmt.Sprintf("listenerbench-%d.perf", pid))
	defer os.Remove(perfOut)
	events := []string{"raw_syscalls:sys_enter"}
	for _, k := range kinds {
		events = append(events, "syscalls:sys_enter_"+k)
	}
	perf := exec.Command("perf", "stat", "-x,", "-e", strings.Join(events, ","), "-p", strconv.Itoa(pid), "-o", perfOut)
	perf.Stderr = os.Stderr
	if err := perf.Start(); err != nil {
		return sample{}, err
	}
	time.Sleep(300 * time.Millisecond) // perf attaches asynchronously
	counted, werr := wrk(url, ld, dur, conns)
	perf.Process.Signal(syscall.SIGINT)
	perf.Wait()
	if werr != nil {
		return sample{}, werr
	}
	counts, err := readPerf(perfOut)
	if err != nil {
		return sample{}, err
	}
	res.syscalls = map[string]float64{}
	for k, v := range counts {
		res.syscalls[k] = v / counted.requests
	}
	return res, nil
}

func wrk(url string, ld load, dur time.Duration, conns int) (sample, error) {
	args := []string{"-c", "1", "wrk", "-t1", "-c" + strconv.Itoa(conns), "-d" + dur.String()}
	args = append(args, ld.wrkArgs...)
	args = append(args, url)
	ctx, cancel := context.WithTimeout(context.Background(), dur+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "taskset", args...).CombinedOutput()
	if err != nil {
		return sample{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	var s sample
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			s.requests, _ = strconv.ParseFloat(f[0], 64)
		case len(f) == 2 && f[0] == "Requests/sec:":
			s.rps, _ = strconv.ParseFloat(f[1], 64)
		case strings.Contains(line, "Socket errors") || strings.Contains(line, "Non-2xx"):
			s.sockErros += " [" + strings.TrimSpace(line) + "]"
		}
	}
	if s.requests == 0 {
		return s, fmt.Errorf("wrk made no requests:\n%s", out)
	}
	return s, nil
}

// cpuTicks is utime+stime of pid, fields 14 and 15 of /proc/PID/stat.
func cpuTicks(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, may contain spaces; count from after it.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return u + s, nil
}

const ticksPerSecond = 100 // sysconf(_SC_CLK_TCK) on Linux

func cpuMicros(s sample) float64 { return s.cpuTicks / ticksPerSecond * 1e6 / s.requests }

func readPerf(path string) (map[string]float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("perf: %q: %w", line, err)
		}
		switch ev := f[2]; {
		case ev == "raw_syscalls:sys_enter":
			m["total"] = v
		case strings.HasPrefix(ev, "syscalls:sys_enter_"):
			m[strings.TrimPrefix(ev, "syscalls:sys_enter_")] = v
		}
	}
	if _, ok := m["total"]; !ok {
		return nil, fmt.Errorf("perf counted nothing:\n%s", b)
	}
	return m, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianOf(ss []sample, f func(sample) float64) float64 {
	xs := make([]float64, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	return median(xs)
}

func render(results map[string]map[string][]sample, dur time.Duration, rounds, conns int) string {
	var b strings.Builder
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(&b, "Hello-world fasthttp: %s; %s, %d cores, Linux %s, %s; server GOMAXPROCS=1 on core 0, `wrk -t1 -c%d -d%s` on core 1; median of %d alternated rounds; %s.\n\n",
		strings.Join(servers, " vs "), host, runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(), conns, dur, rounds, time.Now().UTC().Format("2006-01-02"))
	for _, ld := range loads {
		fmt.Fprintf(&b, "**%s** (figures per %s)\n\n", ld.name, ld.unit)
		fmt.Fprintf(&b, "| server | req/s | CPU µs | syscalls | %s | other |\n", strings.Join(kinds, " | "))
		fmt.Fprintf(&b, "|---|---:|---:|---:|%s\n", strings.Repeat("---:|", len(kinds)+1))
		med := map[string]map[string]float64{}
		for _, srv := range servers {
			ss := results[ld.name][srv]
			m := map[string]float64{
				"rps": medianOf(ss, func(s sample) float64 { return s.rps }),
				"cpu": medianOf(ss, cpuMicros),
			}
			for _, k := range append([]string{"total"}, kinds...) {
				m[k] = medianOf(ss, func(s sample) float64 { return s.syscalls[k] })
			}
			med[srv] = m
			fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.2f |", srv, m["rps"], m["cpu"], m["total"])
			other := m["total"]
			for _, k := range kinds {
				fmt.Fprintf(&b, " %.2f |", m[k])
				other -= m[k]
			}
			// The runtime's own: futex, nanosleep, sched_yield, ...
			fmt.Fprintf(&b, " %.2f |\n", other)
		}
		base := med[servers[0]]
		for _, srv := range servers[1:] {
			c := med[srv]
			fmt.Fprintf(&b, "| %s/%s | %.2f | %.2f | %.2f |", srv, servers[0], c["rps"]/base["rps"], c["cpu"]/base["cpu"], c["total"]/base["total"])
			b.WriteString(strings.Repeat(" |", len(kinds)+1))
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
	return b.String()
}
