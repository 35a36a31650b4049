package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/procstat"
	"github.com/connopt/connopt/listener"
	"github.com/connopt/connopt/ports"
	"github.com/connopt/connopt/sockopt"
)

// report is what a worker prints, one JSON line a second and a final one.
type report struct {
	Role        string            `json:"role"`
	Worker      int               `json:"worker"`
	Open        int64             `json:"open"`
	Established uint64            `json:"established"`
	Failed      uint64            `json:"failed"`
	FailReasons map[string]uint64 `json:"fail_reasons,omitempty"`
	Pings       uint64            `json:"pings"`
	Pongs       uint64            `json:"pongs"`
	Timeouts    uint64            `json:"timeouts"`
	RSS         uint64            `json:"rss"`
	CPU         float64           `json:"cpu"`               // user+system clock ticks of this worker
	Holding     bool              `json:"holding,omitempty"` // a client whose ramp has ended
	Hist        map[int]uint64    `json:"hist,omitempty"`
	HoldHist    map[int]uint64    `json:"hold_hist,omitempty"` // pings sent after the ramp
	Final       bool              `json:"final,omitempty"`
	Addr        string            `json:"addr,omitempty"`
	Metrics     string            `json:"metrics,omitempty"`
}

var out = struct {
	sync.Mutex
	enc *json.Encoder
}{enc: json.NewEncoder(os.Stdout)}

func emit(r report) {
	r.RSS = procstat.RSS()
	r.CPU, _ = procstat.CPUTicks(0)
	out.Lock()
	out.enc.Encode(r)
	out.Unlock()
}

// metricsAddr is where a worker serves /metrics (-metrics): a loopback
// port of its namespace by default; a fixed address for a Prometheus on
// another host (prometheus.yml).
var metricsAddr = "127.0.0.1:0"

// kernelMetrics (-kernel-metrics) adds the kernel's slab caches to this
// worker's /metrics. They are the machine's, not a worker's: one worker per
// host has it (run gives it to server worker 0).
var kernelMetrics bool

// serverLoop (-loop on a server worker) serves the connections from one
// event loop (serveLoop) instead of a goroutine each.
var serverLoop bool

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Uint64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// serveMetrics exposes reg, with the process's own collector (RSS, CPU)
// and the Go runtime's (heap, stacks, goroutines, GC: where RSS goes),
// on metricsAddr in this worker's namespace.
func serveMetrics(reg *prometheus.Registry) string {
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	ln, err := listener.Listen("tcp", metricsAddr, listener.Config{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "connscale: metrics on %s: %v\n", metricsAddr, err)
		return ""
	}
	h := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	go (&fasthttp.Server{Handler: h}).Serve(ln)
	return ln.Addr().String()
}

func gauge(reg *prometheus.Registry, name, help string, f func() float64) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

func counter(reg *prometheus.Registry, name, help string, v *atomic.Uint64) {
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) }))
}

// pingCounters exports a client's pings, pongs and timeouts read in one
// order: the answers first, then the pings. A ping is counted before its
// answer can be (by the goroutine or loop that then reads the pong, or
// under the gnet client's mutex), so every scrape shows pongs + timeouts
// <= pings. (Three counter funcs are gathered concurrently: a scrape could
// read the pings, then a pong of a ping sent after that read.)
type pingCounters struct{ s *clientStats }

var (
	pingsDesc    = prometheus.NewDesc("connscale_client_pings_total", "Pings sent.", nil, nil)
	pongsDesc    = prometheus.NewDesc("connscale_client_pongs_total", "Pongs received.", nil, nil)
	timeoutsDesc = prometheus.NewDesc("connscale_client_timeouts_total", "Pongs that did not come within the timeout.", nil, nil)
)

func (pingCounters) Describe(ch chan<- *prometheus.Desc) {
	ch <- pingsDesc
	ch <- pongsDesc
	ch <- timeoutsDesc
}

func (c pingCounters) Collect(ch chan<- prometheus.Metric) {
	pongs, timeouts := c.s.pongs.Load(), c.s.timeouts.Load()
	pings := c.s.pings.Load()
	ch <- prometheus.MustNewConstMetric(pongsDesc, prometheus.CounterValue, float64(pongs))
	ch <- prometheus.MustNewConstMetric(timeoutsDesc, prometheus.CounterValue, float64(timeouts))
	ch <- prometheus.MustNewConstMetric(pingsDesc, prometheus.CounterValue, float64(pings))
}

// --- server worker ---

var ping, pong = []byte("Ping\n"), []byte("Pong\n")

func runServerWorker(id int, addr string, stop <-chan struct{}) error {
	// TCP keep-alive off on both ends: the pings are the liveness check,
	// and with Go's 15 s keep-alive idle time a connection pinged once a
	// minute would be probed three times in between (two million sockets:
	// 130,000 probes a second, which took the CPU the pongs needed in the
	// first million-connection run).
	ln, err := listener.Listen("tcp", addr, listener.Config{ReusePort: true, DeferAccept: -1, Options: sockopt.Options{KeepAlive: -1}})
	if err != nil {
		return err
	}
	defer ln.Close()
	var open atomic.Int64
	var accepted, pings atomic.Uint64
	reg := prometheus.NewRegistry()
	reg.MustRegister(ln.Metrics())
	counter(reg, "connscale_server_pings_total", "Pings answered.", &pings)
	counter(reg, "connscale_server_accepted_total", "Connections accepted.", &accepted)
	gauge(reg, "connscale_server_open_connections", "Open connections.", func() float64 { return float64(open.Load()) })
	if kernelMetrics {
		reg.MustRegister(slabCollector{})
	}
	if serverLoop {
		go serveLoop(countingListener{ln, &accepted}, &pings, &open)
	} else {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted.Add(1)
				open.Add(1)
				go func() {
					defer open.Add(-1)
					defer c.Close()
					servePings(c, &pings)
				}()
			}
		}()
	}
	emit(report{Role: "server", Worker: id, Addr: ln.Addr().String(), Metrics: serveMetrics(reg)})
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			emit(report{Role: "server", Worker: id, Open: open.Load(), Established: accepted.Load(), Pings: pings.Load(), Final: true})
			return nil
		case <-tick.C:
			emit(report{Role: "server", Worker: id, Open: open.Load(), Established: accepted.Load(), Pings: pings.Load()})
		}
	}
}

// servePings is the server side of the protocol: every "\n"-terminated
// line is a ping and gets "Pong\n" back (the line's content is not
// checked: this is a load, not a parser); it returns when the connection
// fails or closes.
func servePings(c net.Conn, pings *atomic.Uint64) {
	buf := make([]byte, 64)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			k := bytes.Count(buf[:n], []byte{'\n'})
			pings.Add(uint64(k))
			for range k {
				if _, err := c.Write(pong); err != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// --- client worker ---

type clientOpts struct {
	id       int
	server   string
	conns    int
	rate     int // connections per second
	interval time.Duration
	timeout  time.Duration
	hold     time.Duration
	sources  []netip.Addr
	// loop holds the connections from one event loop (loop_linux.go)
	// instead of a goroutine each.
	loop bool
	// gnet holds them with gnet v2's client instead (gnet_linux.go).
	gnet bool
	// tick is the loop's timer granularity: due pings wait for the next
	// tick after the last batch (0: every timer on its own).
	tick time.Duration
}

type clientStats struct {
	open                   atomic.Int64
	established, failed    atomic.Uint64
	pings, pongs, timeouts atomic.Uint64
	mu                     sync.Mutex
	reasons                map[string]uint64
	rtt, holdRTT           hist
	rttProm                *prometheus.HistogramVec // by phase: ramp, hold
	rttRamp, rttHold       prometheus.Observer      // its two series
	holdFrom               atomic.Int64             // Unix ns of the ramp's end; 0 while it runs
	failedProm             *prometheus.CounterVec
}

func (s *clientStats) fail(reason string) {
	s.failed.Add(1)
	s.mu.Lock()
	s.reasons[reason]++
	s.mu.Unlock()
	if s.failedProm != nil {
		s.failedProm.WithLabelValues(reason).Inc()
	}
}

// pong counts a pong that came at now for a ping sent at sent.
func (s *clientStats) pong(sent, now time.Time) {
	rtt := now.Sub(sent)
	s.rtt.record(rtt)
	o := s.rttRamp
	if h := s.holdFrom.Load(); h != 0 && sent.UnixNano() >= h {
		s.holdRTT.record(rtt)
		o = s.rttHold
	}
	if o != nil {
		o.Observe(rtt.Seconds())
	}
	s.pongs.Add(1)
}

func (s *clientStats) report(id int, final bool) report {
	pongs, timeouts := s.pongs.Load(), s.timeouts.Load() // before the pings, as pingCounters reads them
	r := report{Role: "client", Worker: id, Open: s.open.Load(), Established: s.established.Load(), Failed: s.failed.Load(),
		Pings: s.pings.Load(), Pongs: pongs, Timeouts: timeouts, Final: final, FailReasons: map[string]uint64{}}
	s.mu.Lock()
	for k, v := range s.reasons {
		r.FailReasons[k] = v
	}
	s.mu.Unlock()
	if final { // the histograms go only in the last report
		r.Hist = s.rtt.snapshot()
		r.HoldHist = s.holdRTT.snapshot()
	}
	r.Holding = s.holdFrom.Load() != 0
	return r
}

func reason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, ports.ErrExhausted):
		return "ports exhausted"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

func runClientWorker(o clientOpts) error {
	cfg := client.Config{ConnectTimeout: 5 * time.Second, PoolSize: 256, Options: sockopt.Options{KeepAlive: -1}}
	if len(o.sources) > 0 {
		a, err := ports.New(ports.Config{Sources: o.sources})
		if err != nil {
			return err
		}
		cfg.Ports = a
	}
	d, err := client.NewDialer(cfg)
	if err != nil {
		return err
	}
	defer d.Close()
	s := &clientStats{reasons: map[string]uint64{}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(d)
	gauge(reg, "connscale_client_open_connections", "Open connections.", func() float64 { return float64(s.open.Load()) })
	counter(reg, "connscale_client_established_total", "Connections established.", &s.established)
	reg.MustRegister(pingCounters{s})
	s.failedProm = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "connscale_client_failed_total",
		Help: "Connections lost (dial, ping or pong failed), by reason."}, []string{"reason"})
	s.rttProm = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "connscale_client_pong_rtt_seconds",
		Help:    "Time from writing Ping to reading Pong, by when the ping was sent: during this worker's ramp or after it (hold).",
		Buckets: prometheus.ExponentialBuckets(10e-6, 2, 18)}, []string{"phase"})
	s.rttRamp, s.rttHold = s.rttProm.WithLabelValues("ramp"), s.rttProm.WithLabelValues("hold")
	reg.MustRegister(s.rttProm, s.failedProm)
	if kernelMetrics {
		reg.MustRegister(slabCollector{})
	}
	emit(report{Role: "client", Worker: o.id, Metrics: serveMetrics(reg)})

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	rampDone := make(chan struct{})
	if o.loop || o.gnet {
		run := runLoopClient
		if o.gnet {
			run = runGnetClient
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(ctx, d, o, s, rampDone); err != nil {
				s.fail("loop: " + err.Error())
			}
		}()
	} else {
		go func() {
			defer close(rampDone)
			gap := time.Second / time.Duration(max(1, o.rate))
			next := time.Now()
			for i := 0; i < o.conns && ctx.Err() == nil; i++ {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				next = next.Add(gap)
				wg.Add(1)
				go func() {
					defer wg.Done()
					pinger(ctx, d, o, s)
				}()
			}
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var holdEnd <-chan time.Time
	for {
		select {
		case <-rampDone:
			rampDone = nil
			s.holdFrom.Store(time.Now().UnixNano())
			holdEnd = time.After(o.hold)
		case <-holdEnd:
			cancel()
			wg.Wait()
			emit(s.report(o.id, true))
			return nil
		case <-tick.C:
			emit(s.report(o.id, false))
		}
	}
}

// pinger holds one connection: a Ping every interval (the first after a
// random part of it, so pings spread), a Pong expected within timeout.
func pinger(ctx context.Context, d *client.Dialer, o clientOpts, s *clientStats) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	c, err := d.DialContext(dctx, "tcp", o.server)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			s.fail("dial: " + reason(err))
		}
		return
	}
	s.established.Add(1)
	s.open.Add(1)
	defer s.open.Add(-1)
	defer c.Close()
	br := bufio.NewReaderSize(c, 16)
	wait := time.Duration(rand.Int64N(int64(o.interval)))
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// The end of the run: reset rather than leave a TIME_WAIT
			// per connection behind (their bind buckets would keep the
			// ports from the kernel's autobind for a minute).
			c.(interface{ SetLinger(int) error }).SetLinger(0)
			return
		case <-t.C:
		}
		start := time.Now()
		c.SetDeadline(start.Add(o.timeout))
		if _, err := c.Write(ping); err != nil {
			s.fail("ping: " + reason(err))
			return
		}
		s.pings.Add(1)
		line, err := br.ReadSlice('\n')
		if err != nil {
			if reason(err) == "timeout" {
				s.timeouts.Add(1)
			}
			s.fail("pong: " + reason(err))
			return
		}
		if !bytes.Equal(line, pong) {
			s.fail(fmt.Sprintf("pong: unexpected %q", line))
			return
		}
		s.pong(start, time.Now())
		t.Reset(o.interval)
	}
}

// slabCollector exposes /proc/slabinfo as connscale_kernel_slab_bytes{cache}
// at scrape time (root only; nothing without it). Divided by the open
// connections, its growth is the kernel's cost per connection.
type slabCollector struct{}

var slabDesc = prometheus.NewDesc("connscale_kernel_slab_bytes",
	"Kernel memory held by a slab cache (/proc/slabinfo: slabs x pages per slab x page size).", []string{"cache"}, nil)

func (slabCollector) Describe(ch chan<- *prometheus.Desc) { ch <- slabDesc }
func (slabCollector) Collect(ch chan<- prometheus.Metric) {
	slabs, err := procstat.Slabs()
	if err != nil {
		return
	}
	for name, b := range slabs {
		ch <- prometheus.MustNewConstMetric(slabDesc, prometheus.GaugeValue, float64(b), name)
	}
}
