// Command clientbench measures connopt's client.Dialer against net.Dialer
// and fasthttp's dialer, by the method in the README ("How connopt is
// measured"):
//
//  1. syscalls per new connection (dial and close), counted with perf
//     tracepoints on every thread of a worker process (GOMAXPROCS=1) that
//     only dials, and its CPU from /proc: in the process's namespace, and
//     into another one (pool against a setns per dial);
//  2. syscalls per request on a pooled keep-alive connection, fasthttp's
//     HostClient with its own dialer against one built on client.Dialer;
//  3. dial latency into another network namespace: a setns round trip per
//     dial on a locked thread against client.Dialer's socket pool;
//  4. dial latency with a chosen source address as an 8,000-port range
//     fills: fasthttp's TCPDialer{LocalAddr} (bind to port 0 first) against
//     client.Dialer on a ports.Allocator.
//
// It needs root (namespaces, perf), iproute2 and perf (Debian: linux-perf).
// Methods are alternated over rounds; figures are medians.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
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
	"github.com/vishvananda/netns"

	"github.com/connopt/connopt/benchmarks/internal/measure"
	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/nsexec"
	"github.com/connopt/connopt/internal/procstat"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/ports"
)

var kinds = []string{"socket", "connect", "bind", "setsockopt", "getsockopt", "getsockname", "getpeername", "fcntl", "epoll_ctl", "close", "read", "write", "epoll_pwait", "futex", "nanosleep"}

func main() {
	worker := flag.String("worker", "", "internal: dial (or request) with this method, on command")
	addr := flag.String("addr", "", "internal: the address a worker dials")
	ns := flag.String("ns", "", "internal: the namespace a worker dials into")
	phases := flag.String("phases", "syscalls,namespace,fill,profile", "phases to run, comma-separated")
	phase := flag.String("phase", "", "internal: run one phase inside a namespace")
	n := flag.Int("n", 2000, "connections (or requests) per counted run")
	rounds := flag.Int("rounds", 5, "alternated rounds")
	out := flag.String("out", "", "also write the tables to this file")
	flag.Parse()

	switch {
	case *worker != "":
		runWorker(*worker, *addr, *ns, *n)
		return
	case *phase == "fill":
		fmt.Print(fillPhase(*rounds))
		return
	}
	if os.Geteuid() != 0 {
		log.Fatal("clientbench needs root: perf on its workers and network namespaces")
	}
	for _, tool := range []string{"perf", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			log.Fatalf("clientbench needs %s: apt-get install -y linux-perf iproute2", tool)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s; medians of %d alternated rounds.\n\n", measure.Machine(), *rounds)
	for _, p := range strings.Split(*phases, ",") {
		switch p {
		case "syscalls":
			b.WriteString(syscallPhase(*n, *rounds))
		case "namespace":
			b.WriteString(namespacePhase(*rounds))
		case "fill":
			b.WriteString(runFillInNamespace(*rounds))
		case "profile":
			b.WriteString(profilePhase(*n))
		default:
			log.Fatalf("unknown phase %q", p)
		}
	}
	fmt.Print(b.String())
	if *out != "" {
		os.MkdirAll(filepath.Dir(*out), 0o755)
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

// --- 1 and 2: syscalls, counted on a worker process ---

var dialMethods = []string{"net.Dialer", "net.Dialer (3 s timeout)", "fasthttp.Dial", "client.Dialer (no watch)", "client.Dialer", "client.Dialer (keep-alive off)"}

// closeFirst is the suffix of a dial method whose worker waits for the
// upstream's close (reads to EOF) before closing: a connection the
// upstream ends, as after a "Connection: close" response.
const closeFirst = ", upstream closes first"

// closedMethods dial an upstream that closes every connection at once.
var closedMethods = []string{"net.Dialer" + closeFirst, "net.Dialer (3 s timeout)" + closeFirst, "client.Dialer (no watch)" + closeFirst, "client.Dialer" + closeFirst}

// nsDialMethods dial an upstream inside another namespace.
var nsDialMethods = []string{"setns per dial (net.Dialer)", "client.Dialer (pool)"}
var requestMethods = []string{"fasthttp HostClient", "client HostClient (no watch)", "client HostClient"}

func runWorker(method, addr, ns string, n int) {
	var dial func() (net.Conn, error)
	var request func() error
	waitEOF := strings.HasSuffix(method, closeFirst)
	method = strings.TrimSuffix(method, closeFirst)
	switch method {
	case "net.Dialer", "net.Dialer (3 s timeout)":
		// The second has the connect timeout client.Dialer and
		// fasthttp.Dial always apply (a context deadline, a poller
		// deadline and a context.AfterFunc per dial); net.Dialer{} has
		// none.
		d := &net.Dialer{}
		if method != "net.Dialer" {
			d.Timeout = client.DefaultConnectTimeout
		}
		dial = func() (net.Conn, error) { return d.Dial("tcp4", addr) }
	case "fasthttp.Dial":
		dial = func() (net.Conn, error) { return fasthttp.Dial(addr) }
	case "client.Dialer", "client.Dialer (no watch)", "client.Dialer (keep-alive off)", "client.Dialer (pool)":
		// As a new user would: the zero Config but for what the row
		// names.
		cfg := client.Config{DisablePeerWatch: method == "client.Dialer (no watch)"}
		if method == "client.Dialer (keep-alive off)" {
			cfg.KeepAlive = -1
		}
		if method == "client.Dialer (pool)" {
			cfg.Namespace = ns
		}
		d, err := client.NewDialer(cfg)
		if err != nil {
			log.Fatal(err)
		}
		dial = func() (net.Conn, error) { return d.Dial(addr) }
	case "setns per dial (net.Dialer)":
		target, err := netns.GetFromName(ns)
		if err != nil {
			log.Fatal(err)
		}
		dial = func() (net.Conn, error) { return setnsDial(target, addr) }
	case "fasthttp HostClient", "client HostClient", "client HostClient (no watch)":
		hc := &fasthttp.HostClient{Addr: addr, MaxConns: 1}
		if method != "fasthttp HostClient" {
			d, err := client.NewDialer(client.Config{DisablePeerWatch: method != "client HostClient"})
			if err != nil {
				log.Fatal(err)
			}
			hc = d.HostClient(addr)
			hc.MaxConns = 1
		}
		request = func() error {
			_, _, err := hc.Get(nil, "http://"+addr+"/")
			return err
		}
	default:
		log.Fatalf("unknown method %q", method)
	}
	once := func() error {
		if request != nil {
			return request()
		}
		c, err := dial()
		if err != nil {
			return err
		}
		if waitEOF {
			if _, err := c.Read(make([]byte, 1)); err != io.EOF {
				return fmt.Errorf("waiting for the upstream's close: %v", err)
			}
		}
		return c.Close()
	}
	for range 50 { // warm up: threads, pools, the keep-alive connection
		if err := once(); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		k := n
		if f := strings.Fields(in.Text()); len(f) == 2 {
			k, _ = strconv.Atoi(f[1])
		}
		for range k {
			if err := once(); err != nil {
				log.Fatal(err)
			}
		}
		fmt.Println("done")
	}
}

// cpuRuns is how many times n the uncounted run that measures CPU makes,
// so that the 10 ms clock ticks of /proc/PID/stat resolve it.
const cpuRuns = 10

// worker is a worker process for one method, warmed up and waiting.
type worker struct {
	method string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	sc     *bufio.Scanner
}

// startWorker starts a worker process for method with one P
// (GOMAXPROCS=1), so that its threads are only what the method needs.
func startWorker(self, method, addr, ns string, n int) (*worker, error) {
	cmd := exec.Command(self, "-worker", method, "-addr", addr, "-ns", ns, "-n", strconv.Itoa(n))
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	w := &worker{method, cmd, stdin, bufio.NewScanner(stdout)}
	if !w.sc.Scan() || w.sc.Text() != "ready" {
		w.stop()
		return nil, fmt.Errorf("%s worker did not start", method)
	}
	return w, nil
}

// run makes the worker dial (or request) k times.
func (w *worker) run(k int) error {
	fmt.Fprintln(w.stdin, "go", k)
	if !w.sc.Scan() || w.sc.Text() != "done" {
		return fmt.Errorf("%s worker failed", w.method)
	}
	return nil
}

func (w *worker) stop() { w.stdin.Close(); w.cmd.Wait() }

// countWorker counts a worker's syscalls over n units on every thread,
// then its CPU over cpuRuns×n.
func countWorker(self, method, addr, ns string, n int) (map[string]float64, error) {
	w, err := startWorker(self, method, addr, ns, n)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	cmd, run := w.cmd, w.run
	counts, err := measure.Syscalls(cmd.Process.Pid, kinds, func() (float64, error) { return float64(n), run(n) })
	if err != nil {
		return nil, err
	}
	// CPU from a second run that perf does not watch: utime+stime of the
	// worker, per unit.
	t0, err := procstat.CPUTicks(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	if err := run(cpuRuns * n); err != nil {
		return nil, err
	}
	t1, err := procstat.CPUTicks(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	counts["cpu"] = (t1 - t0) / ticksPerSecond * 1e6 / float64(cpuRuns*n)
	return counts, nil
}

// ticksPerSecond is USER_HZ, the unit of /proc/PID/stat's times.
const ticksPerSecond = 100

func syscallPhase(n, rounds int) string {
	self, _ := os.Executable()
	ln := closingSink()
	defer ln.Close()
	hln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer hln.Close()
	go (&fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.WriteString("Hello, World!") }}).Serve(hln)
	// An upstream inside another namespace, for the dials into it.
	ns := fmt.Sprintf("connopt-clientbench-sys-%d", os.Getpid())
	if err := nsexec.Create(ns, nil); err != nil {
		log.Fatal(err)
	}
	defer nsexec.Delete(ns)
	var nln net.Listener
	if err := nsexec.Do(ns, func() (err error) { nln, err = net.Listen("tcp4", "127.0.0.1:0"); return err }); err != nil {
		log.Fatal(err)
	}
	defer nln.Close()
	go testkit.CloseEach(nln)

	type group struct {
		methods []string
		addr    string
		units   int
		unit    string
	}
	groups := []group{
		{dialMethods, ln.Addr().String(), n, "connection"},
		{closedMethods, ln.Addr().String(), n, "connection"},
		{nsDialMethods, nln.Addr().String(), n, "connection"},
		{requestMethods, hln.Addr().String(), n * 10, "request"},
	}
	res := map[string][]map[string]float64{}
	for r := range rounds {
		for _, g := range groups {
			for _, m := range g.methods {
				c, err := countWorker(self, m, g.addr, ns, g.units)
				if err != nil {
					log.Fatal(err)
				}
				c["ratio"] = c["cpu"] / res0(res, g.methods[0], c, m)
				res[m] = append(res[m], c)
				fmt.Fprintf(os.Stderr, "round %d %-32s %.2f syscalls/%s (%.2f on its busiest thread, %.0f threads), %.2f µs CPU\n",
					r+1, m, c["total"], g.unit, c["busiest"], c["threads"], c["cpu"])
			}
		}
	}
	var b strings.Builder
	table := func(title string, methods []string) {
		fmt.Fprintf(&b, "**%s**\n\n| method | CPU µs | CPU ×%s | syscalls, all threads | on the busiest thread | threads | %s | other |\n|---|---:|---:|---:|---:|---:|%s\n",
			title, methods[0], strings.Join(kinds, " | "), strings.Repeat("---:|", len(kinds)+1))
		for _, m := range methods {
			med := map[string]float64{}
			for _, k := range append([]string{"cpu", "ratio", "total", "busiest", "threads"}, kinds...) {
				var xs []float64
				for _, r := range res[m] {
					xs = append(xs, r[k])
				}
				med[k] = measure.Median(xs)
			}
			fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2f | %.2f | %.0f |", m, med["cpu"], med["ratio"], med["total"], med["busiest"], med["threads"])
			other := med["total"]
			for _, k := range kinds {
				fmt.Fprintf(&b, " %.2f |", med[k])
				other -= med[k]
			}
			fmt.Fprintf(&b, " %.2f |\n", other)
		}
		b.WriteString("\n")
	}
	how := fmt.Sprintf("a worker process with GOMAXPROCS=1: syscalls counted by perf on each of its threads, CPU (utime+stime of the whole process) from /proc in a second, uncounted run of %d; CPU × is the median of each round's ratio", cpuRuns*n)
	table(fmt.Sprintf("Syscalls and CPU per new connection, dial and close, in the process's namespace (%d connections per run; %s)", n, how), dialMethods)
	table(fmt.Sprintf("Syscalls and CPU per new connection the upstream closes first (dial, read to EOF, close; %d connections per run; the same method)", n), closedMethods)
	table(fmt.Sprintf("Syscalls and CPU per new connection into another namespace (%d connections per run; the same method)", n), nsDialMethods)
	table(fmt.Sprintf("Syscalls and CPU per request on one pooled keep-alive connection (%d requests per run; CPU from a run of %d)", n*10, cpuRuns*n*10), requestMethods)
	return b.String()
}

// res0 is the CPU of the first method of a group in the round c belongs
// to: c itself when m is that method.
func res0(res map[string][]map[string]float64, first string, c map[string]float64, m string) float64 {
	if m == first {
		return c["cpu"]
	}
	rs := res[first]
	return rs[len(rs)-1]["cpu"]
}

// --- where a dial's CPU goes ---

// profiled are the dial methods whose CPU is broken down by syscall.
var profiled = []string{"net.Dialer", "client.Dialer"}

// profilePhase samples a dialing worker's CPU (perf record -e cpu-clock -g:
// a software clock, no hardware counters needed) and reports the share of
// samples under each syscall's kernel entry (children included: the
// handshake's softirq work runs inside connect), and in user space.
func profilePhase(n int) string {
	self, _ := os.Executable()
	ln := closingSink()
	defer ln.Close()
	shares := map[string]map[string]float64{}
	var names []string
	for _, m := range profiled {
		sh, err := profileWorker(self, m, ln.Addr().String(), n)
		if err != nil {
			log.Fatal(err)
		}
		shares[m] = sh
		for k := range sh {
			if !slices.Contains(names, k) {
				names = append(names, k)
			}
		}
	}
	slices.SortFunc(names, func(a, b string) int {
		return int(1000*shares[profiled[0]][b]) - int(1000*shares[profiled[0]][a])
	})
	var b strings.Builder
	fmt.Fprintf(&b, "**Where a dial and close's CPU goes** (share of `perf record -e cpu-clock -g` samples of a worker dialing %d×%d times; a syscall's share includes what the kernel does inside it, such as the loopback handshake inside `connect`)\n\n| | %s |\n|---|%s\n", cpuRuns, n, strings.Join(profiled, " | "), strings.Repeat("---:|", len(profiled)))
	for _, k := range names {
		fmt.Fprintf(&b, "| %s |", k)
		for _, m := range profiled {
			fmt.Fprintf(&b, " %.1f%% |", shares[m][k])
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	return b.String()
}

func profileWorker(self, method, addr string, n int) (map[string]float64, error) {
	w, err := startWorker(self, method, addr, "", n)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	cmd := w.cmd
	data := filepath.Join(os.TempDir(), fmt.Sprintf("connopt-clientbench-%d.perf", cmd.Process.Pid))
	defer os.Remove(data)
	perf := exec.Command("perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g", "-p", strconv.Itoa(cmd.Process.Pid), "-o", data)
	if err := perf.Start(); err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond) // perf attaches asynchronously
	rerr := w.run(cpuRuns * n)
	perf.Process.Signal(syscall.SIGINT)
	perf.Wait()
	if rerr != nil {
		return nil, rerr
	}
	out := map[string]float64{}
	report := func(args ...string) ([]string, error) {
		b, err := exec.Command("perf", append([]string{"report", "-i", data, "--stdio", "-g", "none"}, args...)...).Output()
		return strings.Split(string(b), "\n"), err
	}
	lines, err := report("--children", "--sort", "sym")
	if err != nil {
		return nil, err
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 4 && strings.HasPrefix(f[3], "__x64_sys_") {
			v, _ := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
			out[strings.TrimPrefix(f[3], "__x64_sys_")] = v
		}
	}
	if lines, err = report("--no-children", "--sort", "dso"); err != nil {
		return nil, err
	}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 2 && !strings.HasPrefix(f[1], "[") {
			v, _ := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
			out["user space"] += v
		}
	}
	return out, nil
}

// --- 3: dial latency into another namespace ---

func namespacePhase(rounds int) string {
	name := fmt.Sprintf("connopt-clientbench-%d", os.Getpid())
	if err := nsexec.Create(name, nil); err != nil {
		log.Fatal(err)
	}
	defer nsexec.Delete(name)
	target, err := netns.GetFromName(name)
	if err != nil {
		log.Fatal(err)
	}
	defer target.Close()

	// The upstream listens inside the namespace.
	var ln net.Listener
	if err := nsexec.Do(name, func() error {
		var err error
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	}); err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go testkit.CloseEach(ln)
	addr := ln.Addr().String()
	d, err := client.NewDialer(client.Config{Namespace: name, PoolSize: 256})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()

	const n = 2000
	methods := []string{"setns per dial (net.Dialer)", "client.Dialer (pool)"}
	res := map[string][][]time.Duration{}
	for range rounds {
		for _, m := range methods {
			var durs []time.Duration
			for range n {
				t0 := time.Now()
				var c net.Conn
				if m == methods[0] {
					c, err = setnsDial(target, addr)
				} else {
					c, err = d.Dial(addr)
				}
				durs = append(durs, time.Since(t0))
				if err != nil {
					log.Fatal(err)
				}
				c.Close()
			}
			slices.Sort(durs)
			res[m] = append(res[m], durs)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "**Dial latency into another network namespace** (%d dials per run, loopback upstream inside the namespace)\n\n", n)
	b.WriteString("| method | median µs | p99 µs |\n|---|---:|---:|\n")
	for _, m := range methods {
		var p50, p99 []time.Duration
		for _, durs := range res[m] {
			p50 = append(p50, durs[len(durs)/2])
			p99 = append(p99, durs[len(durs)*99/100])
		}
		fmt.Fprintf(&b, "| %s | %.1f | %.1f |\n", m, us(median(p50)), us(median(p99)))
	}
	b.WriteString("\n")
	return b.String()
}

// setnsDial is the per-dial dance a client without a pool does: lock the
// thread, enter the namespace, create and connect the socket, come back.
func setnsDial(target netns.NsHandle, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	c, derr := net.Dial("tcp4", addr)
	if err := netns.Set(orig); err != nil {
		return nil, err // leave the thread locked: it dies with this goroutine
	}
	runtime.UnlockOSThread()
	return c, derr
}

// --- 4: source address chosen, range filling (inside a namespace) ---

const rangeLow, rangeSize = 40000, 8000

func runFillInNamespace(rounds int) string {
	name := fmt.Sprintf("connopt-clientbench-fill-%d", os.Getpid())
	if err := nsexec.Create(name, map[string]string{
		"net.ipv4.ip_local_port_range": fmt.Sprintf("%d %d", rangeLow, rangeLow+rangeSize-1),
	}); err != nil {
		log.Fatal(err)
	}
	defer nsexec.Delete(name)
	self, _ := os.Executable()
	cmd := exec.Command("ip", "netns", "exec", name, self, "-phase", "fill", "-rounds", strconv.Itoa(rounds))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		log.Fatalf("fill phase: %v", err)
	}
	return string(out)
}

func fillPhase(rounds int) string {
	ln, err := net.Listen("tcp4", "127.0.0.1:5000")
	if err != nil {
		log.Fatal(err)
	}
	sink := measure.NewSink(ln)
	src := netip.MustParseAddr("127.0.0.1")
	rng := ports.Range{Low: rangeLow, High: rangeLow + rangeSize - 1}
	methods := []string{"fasthttp TCPDialer{LocalAddr}", "client.Dialer + ports Tracked", "client.Dialer + ports Kernel"}
	mk := func(m string) (func(string) (net.Conn, error), func()) {
		switch m {
		case methods[0]:
			d := &fasthttp.TCPDialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
			return d.Dial, func() {}
		}
		st := ports.Tracked
		if m == methods[2] {
			st = ports.Kernel
		}
		a, err := ports.New(ports.Config{Strategy: st, Range: rng, Sources: []netip.Addr{src}})
		if err != nil {
			log.Fatal(err)
		}
		d, err := client.NewDialer(client.Config{Ports: a, PoolSize: 512})
		if err != nil {
			log.Fatal(err)
		}
		return d.Dial, func() { d.Close() }
	}
	checkpoints := []float64{0.10, 0.50, 0.90}
	res := map[string][][3][2]time.Duration{}
	reached := map[string]int{}
	for r := range rounds {
		for _, m := range methods {
			dial, done := mk(m)
			fill := measure.FillRange(dial, "127.0.0.1:5000", int(0.925*rangeSize))
			if fill.StopErr != nil {
				log.Fatalf("%s: after %d connections: %v", m, fill.Reached, fill.StopErr)
			}
			var row [3][2]time.Duration
			for i, at := range checkpoints {
				w := fill.Window(rangeSize, at)
				row[i] = [2]time.Duration{measure.Pct(w, 0.5), measure.Pct(w, 0.99)}
			}
			res[m] = append(res[m], row)
			reached[m] = fill.Reached
			sink.CloseAll()
			done()
			fmt.Fprintf(os.Stderr, "round %d %-32s 10%% %v 90%% %v\n", r+1, m, row[0][0], row[2][0])
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "**Dial latency with a chosen source address as a %d-port range fills** (one loopback destination, in a namespace)\n\n", rangeSize)
	b.WriteString("| method | 10% median (p99) µs | 50% median (p99) µs | 90% median (p99) µs | 90%/10% |\n|---|---:|---:|---:|---:|\n")
	for _, m := range methods {
		fmt.Fprintf(&b, "| %s |", m)
		var meds [3]time.Duration
		for i := range checkpoints {
			var p50, p99 []time.Duration
			for _, row := range res[m] {
				p50 = append(p50, row[i][0])
				p99 = append(p99, row[i][1])
			}
			meds[i] = median(p50)
			fmt.Fprintf(&b, " %.1f (%.1f) |", us(meds[i]), us(median(p99)))
		}
		fmt.Fprintf(&b, " %.2f |\n", float64(meds[2])/float64(meds[0]))
	}
	b.WriteString("\n")
	return b.String()
}

// closingSink listens on loopback and closes every connection it accepts.
func closingSink() net.Listener {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go testkit.CloseEach(ln)
	return ln
}

func us(d time.Duration) float64 { return measure.Micros(d) }

func median(ds []time.Duration) time.Duration { return measure.Median(ds) }
