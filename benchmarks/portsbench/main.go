// Command portsbench times connect() as a narrowed port range fills up, for
// four ways of choosing the source port: the kernel's connect() with no bind,
// bind(ip, 0) before connect (what net.Dialer{LocalAddr} and fasthttp's
// TCPDialer.LocalAddr do), and connopt's ports allocator with the Kernel and
// the Tracked strategy. It reports median and p99 time per dial at 10, 50
// and 90% occupancy, and how many connections each method reached.
//
// It runs itself inside a network namespace it creates (so it needs root and
// iproute2), where ip_local_port_range is the narrowed range and nothing else
// holds ports; the host's settings are not touched. Methods are alternated
// over rounds, so a slow moment of the machine hits every method alike.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/connopt/connopt/benchmarks/internal/measure"
	"github.com/connopt/connopt/internal/nsexec"
	"github.com/connopt/connopt/ports"
)

const (
	rangeLow  = 40000
	dstPort   = 5000 // below the range
	nsVarName = "CONNOPT_PORTSBENCH_INNER"
)

var methods = []string{"connect (no bind)", "bind(ip,0)+connect", "ports Kernel", "ports Tracked"}

var checkpoints = []float64{0.10, 0.50, 0.90}

func main() {
	size := flag.Int("ports", 8000, "size of the narrowed port range")
	rounds := flag.Int("rounds", 5, "alternated rounds")
	out := flag.String("out", "", "also write the table to this file")
	flag.Parse()

	if os.Getenv(nsVarName) == "" {
		outer(*size, *rounds, *out)
		return
	}
	inner(*size, *rounds, *out)
}

// outer creates the namespace and runs this program again inside it.
func outer(size, rounds int, out string) {
	if os.Geteuid() != 0 {
		log.Fatal("portsbench needs root: it creates a network namespace to narrow the port range without touching the host")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		log.Fatal("portsbench needs the ip command: apt-get install -y iproute2")
	}
	name := fmt.Sprintf("connopt-portsbench-%d", os.Getpid())
	if err := nsexec.Create(name, map[string]string{
		"net.ipv4.ip_local_port_range": fmt.Sprintf("%d %d", rangeLow, rangeLow+size-1),
	}); err != nil {
		log.Fatal(err)
	}
	defer nsexec.Delete(name)
	self, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	if out != "" {
		out, _ = filepath.Abs(out)
	}
	cmd := exec.Command("ip", "netns", "exec", name, self,
		fmt.Sprintf("-ports=%d", size), fmt.Sprintf("-rounds=%d", rounds), "-out="+out)
	cmd.Env = append(os.Environ(), nsVarName+"=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		nsexec.Delete(name)
		log.Fatal(err)
	}
}

func inner(size, rounds int, out string) {
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", dstPort))
	if err != nil {
		log.Fatal(err)
	}
	sink := measure.NewSink(ln)
	dst := ln.Addr().String()
	src := netip.MustParseAddr("127.0.0.1")
	rng := ports.Range{Low: rangeLow, High: uint16(rangeLow + size - 1)}

	dialers := map[string]func() (func(string) (net.Conn, error), error){
		"connect (no bind)": func() (func(string) (net.Conn, error), error) {
			d := &net.Dialer{}
			return func(a string) (net.Conn, error) { return d.Dial("tcp4", a) }, nil
		},
		"bind(ip,0)+connect": func() (func(string) (net.Conn, error), error) {
			d := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
			return func(a string) (net.Conn, error) { return d.Dial("tcp4", a) }, nil
		},
		"ports Kernel": func() (func(string) (net.Conn, error), error) {
			a, err := ports.New(ports.Config{Strategy: ports.Kernel, Range: rng, Sources: []netip.Addr{src}})
			if err != nil {
				return nil, err
			}
			return func(addr string) (net.Conn, error) { return a.Dial("tcp4", addr) }, nil
		},
		"ports Tracked": func() (func(string) (net.Conn, error), error) {
			a, err := ports.New(ports.Config{Strategy: ports.Tracked, Range: rng, Sources: []netip.Addr{src}})
			if err != nil {
				return nil, err
			}
			return func(addr string) (net.Conn, error) { return a.Dial("tcp4", addr) }, nil
		},
	}

	results := map[string][]measure.Fill{}
	for r := range rounds {
		for _, m := range methods {
			dial, err := dialers[m]()
			if err != nil {
				log.Fatalf("%s: %v", m, err)
			}
			res := measure.FillRange(dial, dst, size+1)
			fmt.Fprintf(os.Stderr, "round %d %-20s reached %5d (%v)\n", r+1, m, res.Reached, res.StopErr)
			results[m] = append(results[m], res)
			sink.CloseAll()
			runtime.GC()
		}
	}
	table := render(results, size, rounds)
	fmt.Print(table)
	if out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(out, []byte(table), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

func medianDur(ds []time.Duration) time.Duration { return measure.Median(ds) }

func us(d time.Duration) string { return fmt.Sprintf("%.1f", measure.Micros(d)) }

func render(results map[string][]measure.Fill, size, rounds int) string {
	var b strings.Builder
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(&b, "Time per dial to one loopback destination as a %d-port range fills; Linux %s, %s, %d cores; "+
		"median over %d alternated rounds of each round's median (p99) in a ±2.5%% window; %s.\n\n",
		size, strings.TrimSpace(string(kernel)), runtime.Version(), runtime.NumCPU(), rounds, time.Now().UTC().Format("2006-01-02"))
	b.WriteString("| method | 10% median (p99) µs | 50% median (p99) µs | 90% median (p99) µs | 90%/10% | reached |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|\n")
	for _, m := range methods {
		fmt.Fprintf(&b, "| %s |", m)
		var meds []time.Duration
		for _, at := range checkpoints {
			var p50s, p99s []time.Duration
			for _, r := range results[m] {
				w := r.Window(size, at)
				if len(w) == 0 {
					continue
				}
				p50s = append(p50s, measure.Pct(w, 0.5))
				p99s = append(p99s, measure.Pct(w, 0.99))
			}
			if len(p50s) == 0 {
				b.WriteString(" — |")
				meds = append(meds, 0)
				continue
			}
			med := medianDur(p50s)
			meds = append(meds, med)
			fmt.Fprintf(&b, " %s (%s) |", us(med), us(medianDur(p99s)))
		}
		ratio := "—"
		if meds[0] > 0 && meds[2] > 0 {
			ratio = fmt.Sprintf("%.2f", float64(meds[2])/float64(meds[0]))
		}
		var reached []int
		var stop error
		for _, r := range results[m] {
			reached = append(reached, r.Reached)
			stop = r.StopErr
		}
		slices.Sort(reached)
		why := ""
		var se interface{ Unwrap() error }
		if stop != nil && errors.As(stop, &se) {
			why = shortErr(stop)
		}
		fmt.Fprintf(&b, " %s | %d %s |\n", ratio, reached[len(reached)/2], why)
	}
	return b.String()
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return "(" + s + ")"
}
