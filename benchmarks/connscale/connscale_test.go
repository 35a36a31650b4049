package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test binary is also the worker binary: runExperiment starts
// os.Executable() with "server" or "client".
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "server" || os.Args[1] == "client") {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func children(t *testing.T) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	me := strconv.Itoa(os.Getpid())
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if len(f) > 1 && f[1] == me {
			n++
		}
	}
	return n
}

func fds(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// 2,000 connections over 2 client namespaces (on loopback without root),
// 2 s of hold with a ping every 500 ms: every connection is made, every ping
// answered, the counts add up, and nothing is left behind.
func TestSmallRun(t *testing.T) {
	for _, mode := range []string{"goroutines", "loop", "gnet"} {
		t.Run(mode, func(t *testing.T) { smallRun(t, mode) })
	}
}

// smallRun: goroutines on both ends, or event loops on both ends (loop:
// connscale's own; gnet: gnet's client, connscale's loop serving), whose
// timers must fire on time for the ping count to hold.
func smallRun(t *testing.T, mode string) {
	o := runOpts{conns: 2000, rate: 2000, perWorker: 1000, interval: 500 * time.Millisecond, timeout: time.Second, hold: 2 * time.Second,
		loop: mode == "loop", gnet: mode == "gnet", serverLoop: mode != "goroutines", tick: 5 * time.Millisecond}
	_, ipErr := exec.LookPath("ip")
	if os.Geteuid() == 0 && ipErr == nil {
		o.netns = 2
	} else {
		t.Log("not root or no ip command: running on loopback without namespaces")
	}
	baseFDs := fds(t)
	s, err := runExperiment(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(s.table())
	if s.established != 2000 || s.failed != 0 || s.peakOpen != 2000 || s.peakServerOpen != 2000 {
		t.Fatalf("established %d failed %d (%v), peak open %d / server %d", s.established, s.failed, s.reasons, s.peakOpen, s.peakServerOpen)
	}
	// Each connection pings at least every 500 ms for the 2 s hold.
	if s.pongs != s.pings || s.pongs < 2000*3 || s.timeouts != 0 {
		t.Fatalf("pings %d pongs %d timeouts %d", s.pings, s.pongs, s.timeouts)
	}
	// As root, the kernel's share: 2,000 connections (4,000 sockets) grow
	// the TCP slab cache by at least a TCP socket's size each.
	if os.Geteuid() == 0 {
		_, delta, total := slabDelta(s.slabBase, s.slabPeak)
		if total <= 0 || delta["TCP"] < 2000*2000 || !strings.Contains(s.table(), "kernel slab memory per connection") {
			t.Fatalf("slab growth %d B in all, %d B in TCP, for 2,000 connections", total, delta["TCP"])
		}
	}
	var histTotal uint64
	for _, c := range s.hist {
		histTotal += c
	}
	if histTotal != s.pongs || quantile(s.hist, 0.99) <= 0 {
		t.Fatalf("histogram holds %d values for %d pongs", histTotal, s.pongs)
	}
	// The hold's histogram is part of it: the pings of the 2 s hold, at
	// least 3 per connection, none of the ramp's.
	var holdTotal uint64
	for k, c := range s.holdHist {
		holdTotal += c
		if c > s.hist[k] {
			t.Fatalf("bucket %d: %d in the hold, %d in the whole run", k, c, s.hist[k])
		}
	}
	if holdTotal < 2000*3 || holdTotal >= histTotal {
		t.Fatalf("hold histogram holds %d values, whole run %d", holdTotal, histTotal)
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), "cs"+strconv.Itoa(os.Getpid()%100000)) {
		t.Fatalf("namespaces left behind:\n%s", out)
	}
	if n := children(t); n != 0 {
		t.Fatalf("%d worker processes left", n)
	}
	if n := fds(t); n > baseFDs {
		t.Fatalf("descriptors: %d, %d before", n, baseFDs)
	}
}
