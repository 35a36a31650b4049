// Command httpbench is connopt's hello-world comparison, run side by side
// and alternated, by the method in the README ("How connopt is measured"): each server pinned
// to core 0 with GOMAXPROCS=1, wrk pinned to core 1, three loads
// (keep-alive, connection churn, 16-deep pipelining), and per server and
// load: requests/s and server CPU per request from a run without perf, the
// syscalls per request by kind from a second run counted with perf
// tracepoints, and peak RSS; every figure also as a ratio to stock fasthttp.
//
// Servers: net/http, fasthttp on net.Listen, fasthttp on its reuseport
// listener, fasthttp on connopt's listener (plain, and with WrapConns), connopt's server package with
// the metrics middleware, and gnet v2 (an event loop without an HTTP
// parser: a floor), built from benchmarks/gnet, its own module.
//
// It writes a Markdown table and two SVG charts to -out (a directory) and
// prints the table. It needs wrk, perf (Debian: linux-perf) and taskset.
package main

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/connopt/connopt/benchmarks/internal/measure"
	"github.com/connopt/connopt/internal/procstat"
)

//go:embed pipeline.lua
var pipelineLua []byte

// Syscalls reported by kind; the total is raw_syscalls:sys_enter.
var kinds = []string{"read", "write", "writev", "setsockopt", "getsockopt", "getsockname", "accept4", "epoll_ctl", "epoll_pwait", "close"}

type load struct {
	name, unit string
	wrkArgs    []string
}

var allLoads = []load{
	{"keep-alive", "request", nil},
	{"churn", "connection", []string{"-H", "Connection: close"}},
	{"pipelined", "request", []string{"-s", "PIPELINE", "--", "16"}},
}

// Options is one run of the harness.
type Options struct {
	Servers  []string
	Loads    []string
	Duration time.Duration
	Rounds   int
	Conns    int
	Perf     bool   // count syscalls (needs perf and root)
	GnetBin  string // the gnet server binary; empty skips gnet
	Out      string // directory for latest.md and the charts; empty: print only
	NoWarmup bool   // skip the one-second warm-up run (smoke tests)
	Log      func(format string, args ...any)
}

type sample struct {
	requests float64
	rps      float64
	cpuTicks float64
	syscalls map[string]float64 // per request, from the counted run
	rssKiB   float64
	errors   string
}

func main() {
	var o Options
	servers := flag.String("servers", strings.Join(allServers, ","), "servers, comma-separated")
	loads := flag.String("loads", "keep-alive,churn,pipelined", "loads, comma-separated")
	flag.DurationVar(&o.Duration, "d", 5*time.Second, "duration of each wrk run")
	flag.IntVar(&o.Rounds, "rounds", 3, "alternated rounds")
	flag.IntVar(&o.Conns, "c", 50, "wrk connections")
	flag.BoolVar(&o.Perf, "perf", true, "count syscalls with perf")
	flag.StringVar(&o.GnetBin, "gnet", "", "gnet server binary (make bench builds it); empty skips gnet")
	flag.StringVar(&o.Out, "out", "", "directory for latest.md, cpu.svg and syscalls.svg")
	flag.Parse()
	o.Servers = strings.Split(*servers, ",")
	o.Loads = strings.Split(*loads, ",")
	o.Log = func(f string, a ...any) { fmt.Fprintf(os.Stderr, f, a...) }
	table, err := Run(o)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(table)
}

// Run runs the comparison and returns the Markdown table.
func Run(o Options) (string, error) {
	tools := []string{"wrk", "taskset"}
	if o.Perf {
		tools = append(tools, "perf")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("missing %s; on Debian: apt-get install -y wrk linux-perf util-linux (make bench-deps)", tool)
		}
	}
	if runtime.NumCPU() < 2 {
		return "", errors.New("needs 2 cores: one for the server, one for wrk")
	}
	if o.GnetBin == "" {
		o.Servers = slices.DeleteFunc(slices.Clone(o.Servers), func(s string) bool { return s == "gnet" })
	}
	var loads []load
	for _, l := range allLoads {
		if slices.Contains(o.Loads, l.name) {
			loads = append(loads, l)
		}
	}
	lua, err := os.CreateTemp("", "pipeline-*.lua")
	if err != nil {
		return "", err
	}
	defer os.Remove(lua.Name())
	lua.Write(pipelineLua)
	lua.Close()

	results := map[string]map[string][]sample{}
	for _, ld := range loads {
		for i, a := range ld.wrkArgs {
			if a == "PIPELINE" {
				ld.wrkArgs = slices.Clone(ld.wrkArgs)
				ld.wrkArgs[i] = lua.Name()
			}
		}
		results[ld.name] = map[string][]sample{}
		for r := range o.Rounds {
			for _, srv := range o.Servers {
				s, err := runOnce(o, srv, ld)
				if err != nil {
					return "", fmt.Errorf("%s, %s, round %d: %w", srv, ld.name, r+1, err)
				}
				o.Log("%-10s %-18s round %d: %8.0f req/s, %6.2f syscalls/%s, %5.2f µs CPU/%s%s\n",
					ld.name, srv, r+1, s.rps, s.syscalls["total"], ld.unit, cpuMicros(s), ld.unit, s.errors)
				results[ld.name][srv] = append(results[ld.name][srv], s)
			}
		}
	}
	table := render(o, loads, results)
	if o.Out != "" {
		if err := os.MkdirAll(o.Out, 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(o.Out, "latest.md"), []byte(table), 0o644); err != nil {
			return "", err
		}
		if err := charts(o, loads, results); err != nil {
			return "", err
		}
	}
	return table, nil
}

func serverCmd(o Options, srv string) *exec.Cmd {
	self, _ := os.Executable()
	var cmd *exec.Cmd
	if srv == "gnet" {
		cmd = exec.Command("taskset", "-c", "0", o.GnetBin)
	} else {
		cmd = exec.Command("taskset", "-c", "0", self)
		cmd.Env = append(os.Environ(), serveEnv+"="+srv)
	}
	cmd.Env = append(cmd.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	return cmd
}

func runOnce(o Options, srv string, ld load) (sample, error) {
	cmd := serverCmd(o, srv)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return sample{}, err
	}
	if err := cmd.Start(); err != nil {
		return sample{}, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	var addr string
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
			addr = a
			break
		}
	}
	if addr == "" {
		return sample{}, errors.New("server did not start")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	url := "http://" + addr + "/"
	pid := cmd.Process.Pid

	// Warm up, so the runtime's threads exist before perf attaches.
	if !o.NoWarmup {
		if _, err := wrk(url, ld, time.Second, o.Conns); err != nil {
			return sample{}, err
		}
	}
	// CPU and throughput from a run without perf attached: counting
	// tracepoints costs the server more for every syscall it makes.
	t0, err := procstat.CPUTicks(pid)
	if err != nil {
		return sample{}, err
	}
	res, err := wrk(url, ld, o.Duration, o.Conns)
	if err != nil {
		return sample{}, err
	}
	t1, err := procstat.CPUTicks(pid)
	if err != nil {
		return sample{}, err
	}
	res.cpuTicks = t1 - t0
	res.syscalls = map[string]float64{}
	if o.Perf {
		if res.syscalls, err = countSyscalls(pid, url, ld, o); err != nil {
			return sample{}, err
		}
	}
	res.rssKiB = peakRSS(pid)
	return res, nil
}

func countSyscalls(pid int, url string, ld load, o Options) (map[string]float64, error) {
	return measure.Syscalls(pid, kinds, func() (float64, error) {
		counted, err := wrk(url, ld, o.Duration, o.Conns)
		return counted.requests, err
	})
}

func wrk(url string, ld load, dur time.Duration, conns int) (sample, error) {
	// wrk takes whole seconds.
	secs := fmt.Sprintf("%ds", max(1, int(dur.Round(time.Second)/time.Second)))
	args := []string{"-c", "1", "wrk", "-t1", "-c" + strconv.Itoa(conns), "-d" + secs}
	// wrk's Lua arguments come after "--", and the URL must precede them.
	var luaArgs []string
	for i, a := range ld.wrkArgs {
		if a == "--" {
			luaArgs = ld.wrkArgs[i:]
			break
		}
		args = append(args, a)
	}
	args = append(args, url)
	args = append(args, luaArgs...)
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
			s.errors += " [" + strings.TrimSpace(line) + "]"
		}
	}
	if s.requests == 0 {
		return s, fmt.Errorf("wrk made no requests:\n%s", out)
	}
	return s, nil
}

// peakRSS is VmHWM of pid, in KiB.
func peakRSS(pid int) float64 {
	b, _ := procstat.StatusBytes(pid, "VmHWM")
	return float64(b) / 1024
}

const ticksPerSecond = 100 // sysconf(_SC_CLK_TCK) on Linux

func cpuMicros(s sample) float64 { return s.cpuTicks / ticksPerSecond * 1e6 / s.requests }

// figures are the medians of one server under one load.
type figures struct {
	rps, cpu, rss float64
	sys           map[string]float64
}

func summarize(ss []sample) figures {
	pick := func(f func(sample) float64) float64 {
		xs := make([]float64, len(ss))
		for i, s := range ss {
			xs[i] = f(s)
		}
		return measure.Median(xs)
	}
	fg := figures{
		rps: pick(func(s sample) float64 { return s.rps }),
		cpu: pick(cpuMicros),
		rss: pick(func(s sample) float64 { return s.rssKiB / 1024 }),
		sys: map[string]float64{},
	}
	for _, k := range append([]string{"total"}, kinds...) {
		fg.sys[k] = pick(func(s sample) float64 { return s.syscalls[k] })
	}
	return fg
}

func render(o Options, loads []load, results map[string]map[string][]sample) string {
	var b strings.Builder
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(&b, "Hello-world servers; %d cores, Linux %s, %s; %s. Server GOMAXPROCS=1 on core 0, `wrk -t1 -c%d -d%s` on core 1; medians of %d alternated rounds; ×fasthttp is the ratio to stock fasthttp (lower is better for CPU and syscalls).\n\n",
		runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(), time.Now().UTC().Format("2006-01-02"), o.Conns, o.Duration, o.Rounds)
	for _, ld := range loads {
		fmt.Fprintf(&b, "**%s** (per %s)\n\n", ld.name, ld.unit)
		fmt.Fprintf(&b, "| server | req/s | ×fasthttp | CPU µs | ×fasthttp | syscalls | ×fasthttp | %s | peak RSS MiB |\n", strings.Join(kinds, " | "))
		fmt.Fprintf(&b, "|---|%s\n", strings.Repeat("---:|", 7+len(kinds)))
		base := summarize(results[ld.name][baseline])
		ratio := func(a, b float64) string {
			if b == 0 {
				return "—"
			}
			return fmt.Sprintf("%.2f", a/b)
		}
		for _, srv := range o.Servers {
			f := summarize(results[ld.name][srv])
			fmt.Fprintf(&b, "| %s | %.0f | %s | %.2f | %s | %.2f | %s |", srv, f.rps, ratio(f.rps, base.rps), f.cpu, ratio(f.cpu, base.cpu),
				f.sys["total"], ratio(f.sys["total"], base.sys["total"]))
			for _, k := range kinds {
				fmt.Fprintf(&b, " %.2f |", f.sys[k])
			}
			fmt.Fprintf(&b, " %.1f |\n", f.rss)
		}
		b.WriteString("\n")
	}
	return b.String()
}
