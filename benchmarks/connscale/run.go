package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/connopt/connopt/benchmarks/internal/measure"
	"github.com/connopt/connopt/internal/nsexec"
	"github.com/connopt/connopt/internal/procstat"
)

type runOpts struct {
	loop                          bool // client workers on the event loop
	tick                          time.Duration
	gnet                          bool // client workers on gnet v2
	serverLoop                    bool // server workers on the event loop
	conns, rate, perWorker, netns int
	// noSources dials without a source address or port allocator: the
	// kernel picks both, and one server address caps the run at the
	// ephemeral range (28,232 ports by default).
	noSources               bool
	interval, timeout, hold time.Duration
	log                     io.Writer
}

type worker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	role  string
	id    int
}

// summary is the end of an experiment.
type summary struct {
	opts                     runOpts
	established, failed      uint64
	reasons                  map[string]uint64
	pings, pongs, timeouts   uint64
	peakOpen, peakServerOpen int64
	serverRSS, clientRSS     uint64         // at peak, all workers
	hist                     map[int]uint64 // every pong
	holdHist                 map[int]uint64 // pongs of pings sent after the ramp
	servers, clients         int
	elapsed                  time.Duration
	kernelTCP                uint64 // bytes of TCP buffers in the kernel at peak (loopback runs)
	// The hold, from the first second every client reported its ramp
	// ended to the last before one stopped: CPU per ping there.
	holdFrom, holdTo cpuMark
	// Slab caches (procstat.Slabs) before the servers start and at the
	// clients' peak: what the kernel spends per connection, by cache.
	slabBase, slabPeak map[string]uint64
}

// cpuMark is the CPU time spent so far, in clock ticks: by the client
// workers and by the server workers (the scheduler's measured run time),
// the machine's idle time (measured; its busy columns are sampled at the
// timer tick and miss loops that wake and sleep between ticks), and the
// pings sent so far, at a moment.
type cpuMark struct {
	at                   time.Time
	client, server, idle float64
	pings                uint64
}

// perPing is the CPU time per ping from m to n, by the clients, the servers
// and the machine (all CPUs' time minus idle: the kernel's softirq network
// work too, which no process is charged with); zero without pings.
func (m cpuMark) perPing(n cpuMark) (client, server, machine time.Duration) {
	p := float64(n.pings) - float64(m.pings)
	if p <= 0 {
		return 0, 0, 0
	}
	tick := float64(time.Second) / clockTicks
	d := func(a, b float64) time.Duration { return time.Duration((b - a) * tick / p) }
	wall := n.at.Sub(m.at).Seconds() * clockTicks * float64(runtime.NumCPU())
	return d(m.client, n.client), d(m.server, n.server), d(m.idle, m.idle+wall-(n.idle-m.idle))
}

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTicks = 100

// slabDelta is the growth of each slab cache from base to peak, largest
// first, and the total.
func slabDelta(base, peak map[string]uint64) (caches []string, delta map[string]int64, total int64) {
	delta = map[string]int64{}
	for name, b := range peak {
		if d := int64(b) - int64(base[name]); d != 0 {
			delta[name] = d
			total += d
			caches = append(caches, name)
		}
	}
	sort.Slice(caches, func(i, j int) bool { return delta[caches[i]] > delta[caches[j]] })
	return caches, delta, total
}

// kernelTCPBytes reads the TCP "mem" pages of /proc/net/sockstat: socket
// buffer memory the kernel holds, which no process's RSS shows.
func kernelTCPBytes() uint64 {
	b, _ := os.ReadFile("/proc/net/sockstat")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "TCP:" {
			for i := 1; i+1 < len(f); i += 2 {
				if f[i] == "mem" {
					var pages uint64
					fmt.Sscan(f[i+1], &pages)
					return pages * uint64(os.Getpagesize())
				}
			}
		}
	}
	return 0
}

func (s summary) table() string {
	var b strings.Builder
	perConn := func(rss uint64, n int64) string {
		if n == 0 {
			return "—"
		}
		return fmt.Sprintf("%.1f KiB", float64(rss)/1024/float64(n))
	}
	fmt.Fprintf(&b, "\n| connscale | |\n|---|---:|\n")
	fmt.Fprintf(&b, "| connections asked | %d |\n| established | %d |\n| failed | %d |\n", s.opts.conns, s.established, s.failed)
	fmt.Fprintf(&b, "| peak open (clients / server) | %d / %d |\n", s.peakOpen, s.peakServerOpen)
	fmt.Fprintf(&b, "| pings / pongs / timeouts | %d / %d / %d |\n", s.pings, s.pongs, s.timeouts)
	fmt.Fprintf(&b, "| pong RTT p50 / p99 / p99.9, whole run | %v / %v / %v |\n", quantile(s.hist, 0.5), quantile(s.hist, 0.99), quantile(s.hist, 0.999))
	fmt.Fprintf(&b, "| pong RTT p50 / p99 / p99.9, hold (pings sent after the ramp) | %v / %v / %v |\n", quantile(s.holdHist, 0.5), quantile(s.holdHist, 0.99), quantile(s.holdHist, 0.999))
	if c, sv, m := s.holdFrom.perPing(s.holdTo); m > 0 {
		fmt.Fprintf(&b, "| CPU per ping in the hold: client / server workers, whole machine | %.1f / %.1f µs, %.1f µs |\n",
			measure.Micros(c), measure.Micros(sv), measure.Micros(m))
	}
	fmt.Fprintf(&b, "| memory per connection, server / client (RSS) | %s / %s |\n", perConn(s.serverRSS, s.peakServerOpen), perConn(s.clientRSS, s.peakOpen))
	if s.servers > 0 && s.clients > 0 {
		fmt.Fprintf(&b, "| RSS per worker at the peak, server / client (mean) | %.0f / %.0f MiB |\n",
			float64(s.serverRSS)/float64(s.servers)/(1<<20), float64(s.clientRSS)/float64(s.clients)/(1<<20))
	}
	if s.kernelTCP > 0 {
		fmt.Fprintf(&b, "| kernel TCP buffers per socket (both ends) | %s |\n", perConn(s.kernelTCP, 2*s.peakOpen))
	}
	if s.slabBase != nil && s.slabPeak != nil && s.peakOpen > 0 {
		caches, delta, total := slabDelta(s.slabBase, s.slabPeak)
		fmt.Fprintf(&b, "| kernel slab memory per connection, both ends (/proc/slabinfo, peak minus start) | %s |\n", perConn(uint64(max(total, 0)), s.peakOpen))
		for _, c := range caches[:min(len(caches), 8)] {
			fmt.Fprintf(&b, "| &nbsp;&nbsp;of which %s | %.0f B |\n", c, float64(delta[c])/float64(s.peakOpen))
		}
	}
	fmt.Fprintf(&b, "| workers (server / client processes) | %d / %d |\n| elapsed | %v |\n", s.servers, s.clients, s.elapsed.Round(time.Second))
	if len(s.reasons) > 0 {
		keys := make([]string, 0, len(s.reasons))
		for k := range s.reasons {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return s.reasons[keys[i]] > s.reasons[keys[j]] })
		b.WriteString("\nWhat stopped connections:\n")
		for _, k := range keys {
			fmt.Fprintf(&b, "- %s: %d%s\n", k, s.reasons[k], limitOf(k))
		}
	}
	return b.String()
}

// limitOf names the resource behind a failure reason.
func limitOf(reason string) string {
	for _, l := range []struct{ text, limit string }{
		{"cannot assign requested address", "source ports: the ephemeral range is used up for this source and destination"},
		{"ports exhausted", "source ports: the allocator's range is used up"},
		{"address already in use", "source ports"},
		{"too many open files", "descriptors: RLIMIT_NOFILE; use more worker processes"},
		{"cannot allocate memory", "memory"},
		{"no buffer space", "kernel memory (socket buffers)"},
		{"timeout", "time: a busy CPU or a full accept queue"},
		{"deadline exceeded", "time: a busy CPU or a full accept queue"},
	} {
		if strings.Contains(reason, l.text) {
			return " (" + l.limit + ")"
		}
	}
	return ""
}

func sh(args ...string) error { return measure.Run(args...) }

// topology makes the namespaces: one for the server, n for clients, each
// client joined to the server by a veth pair on 198.18.i.0/24.
type topology struct {
	server  string
	clients []string
}

func makeTopology(n int) (*topology, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("-netns needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("-netns needs iproute2's ip")
	}
	tag := fmt.Sprintf("cs%d", os.Getpid()%100000)
	t := &topology{server: tag + "s"}
	if err := nsexec.Create(t.server, nil); err != nil {
		return nil, err
	}
	for i := 1; i <= n; i++ {
		c := fmt.Sprintf("%sc%d", tag, i)
		t.clients = append(t.clients, c)
		sv, cv := fmt.Sprintf("%ss%d", tag, i), fmt.Sprintf("%sv%d", tag, i)
		if err := nsexec.Create(c, nil); err != nil {
			t.remove()
			return nil, err
		}
		for _, cmd := range [][]string{
			{"ip", "-n", t.server, "link", "add", sv, "type", "veth", "peer", "name", cv, "netns", c},
			{"ip", "-n", t.server, "addr", "add", fmt.Sprintf("198.18.%d.1/24", i), "dev", sv},
			{"ip", "-n", c, "addr", "add", fmt.Sprintf("198.18.%d.2/24", i), "dev", cv},
			{"ip", "-n", t.server, "link", "set", sv, "up"},
			{"ip", "-n", c, "link", "set", cv, "up"},
		} {
			if err := sh(cmd...); err != nil {
				t.remove()
				return nil, err
			}
		}
	}
	return t, nil
}

// addSource gives client namespace i one more address.
func (t *topology) addSource(i, host int) (string, error) {
	a := fmt.Sprintf("198.18.%d.%d", i+1, host)
	dev := fmt.Sprintf("cs%dv%d", os.Getpid()%100000, i+1)
	return a, sh("ip", "-n", t.clients[i], "addr", "add", a+"/24", "dev", dev)
}

func (t *topology) remove() {
	for _, c := range t.clients {
		nsexec.Delete(c)
	}
	nsexec.Delete(t.server)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// runExperiment runs server and client workers, reports progress every
// second on o.log, and returns the summary. Everything it started is gone
// when it returns.
func runExperiment(o runOpts) (summary, error) {
	if o.conns < 1 || o.rate < 1 || o.perWorker < 1 || o.interval <= 0 || o.timeout <= 0 {
		return summary{}, errors.New("connscale: conns, rate, per-worker, interval and timeout must be positive")
	}
	self, err := os.Executable()
	if err != nil {
		return summary{}, err
	}
	var topo *topology
	if o.netns > 0 {
		if topo, err = makeTopology(o.netns); err != nil {
			return summary{}, err
		}
		defer topo.remove()
	}
	nServers := ceilDiv(o.conns, o.perWorker)
	nClients := max(nServers, o.netns)
	reports := make(chan report, 1024)
	var workers []*worker
	var wg sync.WaitGroup
	start := func(role string, id int, ns string, args ...string) (*worker, error) {
		argv := append([]string{self, role, "-id", fmt.Sprint(id)}, args...)
		if ns != "" {
			argv = append([]string{"ip", "netns", "exec", ns}, argv...)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stderr = os.Stderr
		dieWithParent(cmd)
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		w := &worker{cmd: cmd, stdin: stdin, role: role, id: id}
		workers = append(workers, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 1<<20), 1<<24)
			for sc.Scan() {
				var r report
				if json.Unmarshal(sc.Bytes(), &r) == nil {
					reports <- r
				}
			}
		}()
		return w, nil
	}
	defer func() {
		for _, w := range workers {
			w.stdin.Close()
			w.cmd.Process.Kill()
			w.cmd.Wait()
		}
		wg.Wait()
	}()

	// The kernel's slab caches before anything is started (nil without
	// root: the summary then leaves the split out).
	// Empty slabs kept from earlier runs are given back first, or this
	// run's sockets would partly fit in them and show less growth.
	procstat.ShrinkSlabs()
	slabBase, _ := procstat.Slabs()

	// Servers: the first picks the port (loopback) or 9100 (own namespace).
	serverNS, serverAddr := "", "127.0.0.1:0"
	if topo != nil {
		serverNS, serverAddr = topo.server, "0.0.0.0:9100"
	}
	var port string
	for i := range nServers {
		args := []string{"-addr", serverAddr, fmt.Sprintf("-loop=%v", o.serverLoop)}
		if i == 0 {
			args = append(args, "-kernel-metrics")
		}
		if _, err := start("server", i, serverNS, args...); err != nil {
			return summary{}, err
		}
		if i == 0 {
			r, err := waitAddr(reports, "server")
			if err != nil {
				return summary{}, err
			}
			port = r.Addr[strings.LastIndexByte(r.Addr, ':')+1:]
			serverAddr = serverAddr[:strings.LastIndexByte(serverAddr, ':')+1] + port
		}
	}

	// Clients: each its share, its own source address, its own namespace
	// (round robin) when there are namespaces.
	began := time.Now()
	for i := range nClients {
		share := o.conns / nClients
		if i < o.conns%nClients {
			share++
		}
		ns, target, source := "", "127.0.0.1:"+port, fmt.Sprintf("127.0.%d.1", i+1)
		if topo != nil {
			k := i % len(topo.clients)
			ns, target = topo.clients[k], fmt.Sprintf("198.18.%d.1:%s", k+1, port)
			if source, err = topo.addSource(k, 10+i); err != nil {
				return summary{}, err
			}
		}
		if o.noSources {
			source = ""
		}
		_, err := start("client", i, ns, "-server", target, "-conns", fmt.Sprint(share),
			"-rate", fmt.Sprint(max(1, o.rate/nClients)), "-interval", o.interval.String(),
			"-timeout", o.timeout.String(), "-hold", o.hold.String(), "-sources", source, fmt.Sprintf("-loop=%v", o.loop), "-tick", o.tick.String(), fmt.Sprintf("-gnet=%v", o.gnet))
		if err != nil {
			return summary{}, err
		}
	}

	s := summary{opts: o, servers: nServers, clients: nClients, reasons: map[string]uint64{}, hist: map[int]uint64{}, holdHist: map[int]uint64{}, slabBase: slabBase}
	latest := map[string]report{}
	finals := 0
	deadline := time.After(time.Duration(o.conns/o.rate+1)*time.Second + o.hold + o.interval + 2*time.Minute)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastEst, lastFailed uint64
	held := false // s.holdFrom is set
	for finals < nClients {
		select {
		case r := <-reports:
			key := fmt.Sprintf("%s/%d", r.Role, r.Worker)
			if r.Final && r.Role == "client" {
				finals++
				s.established += r.Established
				s.failed += r.Failed
				s.pings += r.Pings
				s.pongs += r.Pongs
				s.timeouts += r.Timeouts
				for k, v := range r.FailReasons {
					s.reasons[k] += v
				}
				for k, v := range r.Hist {
					s.hist[k] += v
				}
				for k, v := range r.HoldHist {
					s.holdHist[k] += v
				}
			}
			if r.Metrics == "" {
				latest[key] = r
			}
		case <-tick.C:
			var open, srvOpen int64
			var est, failed, timeouts uint64
			var srvRSS, cliRSS uint64
			var mark cpuMark
			holding := 0
			for _, r := range latest {
				if r.Role == "client" {
					open += r.Open
					est += r.Established
					failed += r.Failed
					timeouts += r.Timeouts
					cliRSS += r.RSS
					mark.client += r.CPU
					mark.pings += r.Pings
					if r.Holding && !r.Final {
						holding++
					}
				} else {
					srvOpen += r.Open
					srvRSS += r.RSS
					mark.server += r.CPU
				}
			}
			if holding == nClients && finals == 0 {
				busy, total, _ := procstat.MachineTicks()
				mark.at, mark.idle = time.Now(), total-busy
				if !held {
					s.holdFrom, held = mark, true
				}
				s.holdTo = mark
			}
			// The kernel's figures are read now, the workers' come from
			// their last report: at the end of a run a report still
			// says "open" while the sockets close, so the kernel is read
			// when the count first reaches its peak, not again after.
			if open > s.peakOpen {
				if topo == nil {
					s.kernelTCP = kernelTCPBytes()
				}
				if slabBase != nil {
					s.slabPeak, _ = procstat.Slabs()
				}
			}
			if open >= s.peakOpen {
				s.peakOpen, s.clientRSS = open, cliRSS
			}
			if srvOpen >= s.peakServerOpen {
				s.peakServerOpen, s.serverRSS = srvOpen, srvRSS
			}
			if o.log != nil {
				fmt.Fprintf(o.log, "t=%3ds open %d (server %d), +%d/s established, +%d/s failed, %d failed, %d timeouts, rss server %d MiB client %d MiB\n",
					int(time.Since(began).Seconds()), open, srvOpen, est-lastEst, failed-lastFailed, failed, timeouts, srvRSS>>20, cliRSS>>20)
			}
			lastEst, lastFailed = est, failed
		case <-deadline:
			return s, errors.New("connscale: the experiment overran its time bound")
		}
	}
	s.elapsed = time.Since(began)
	return s, nil
}

func waitAddr(reports <-chan report, role string) (report, error) {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case r := <-reports:
			if r.Role == role && r.Addr != "" {
				return r, nil
			}
		case <-timeout:
			return report{}, fmt.Errorf("connscale: no %s worker started", role)
		}
	}
}
