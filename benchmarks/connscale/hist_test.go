package main

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestHistBuckets(t *testing.T) {
	for _, d := range []time.Duration{0, time.Microsecond, 63 * time.Microsecond, 64 * time.Microsecond,
		100 * time.Microsecond, time.Millisecond, 37 * time.Millisecond, time.Second, time.Minute} {
		i := bucketOf(d)
		lo, hi := lowerBound(i), lowerBound(i+1)
		if d < lo || d >= hi && d >= 64*time.Microsecond {
			t.Errorf("%v in bucket %d [%v, %v)", d, i, lo, hi)
		}
		if d >= 64*time.Microsecond && float64(hi-lo)/float64(lo) > 0.016 {
			t.Errorf("bucket %d [%v, %v) wider than 1.6%%", i, lo, hi)
		}
	}
	var h hist
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	s := h.snapshot()
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {0.999, 999 * time.Millisecond}} {
		got := quantile(s, c.q)
		if float64(got) < 0.98*float64(c.want) || float64(got) > 1.0*float64(c.want) {
			t.Errorf("q%v = %v, want about %v", c.q, got, c.want)
		}
	}
}

// FuzzServePings feeds arbitrary bytes to the server side of the protocol:
// it answers exactly one "Pong\n" per "\n", whatever else the bytes hold,
// and returns when the peer closes.
func FuzzServePings(f *testing.F) {
	for _, s := range []string{"Ping\n", "Ping\nPing\n", "", "\n\n\n", "Pi", "x\x00\n", strings.Repeat("Ping\n", 40)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		srv, cli := net.Pipe()
		var pings atomic.Uint64
		done := make(chan struct{})
		go func() { servePings(srv, &pings); srv.Close(); close(done) }()
		want := bytes.Count(in, []byte{'\n'})
		got := make(chan []byte, 1)
		go func() {
			b := make([]byte, 5*want)
			n, _ := io.ReadFull(cli, b)
			got <- b[:n]
		}()
		cli.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := cli.Write(in); err != nil {
			t.Fatal(err)
		}
		b := <-got
		cli.Close()
		<-done
		if !bytes.Equal(b, bytes.Repeat(pong, want)) || int(pings.Load()) != want {
			t.Fatalf("%q: answered %q (%d pings counted), want %d pongs", in, b, pings.Load(), want)
		}
	})
}

// CPU per ping: process ticks per ping, and the machine's busy time as all
// CPUs' wall time minus the idle time measured in between.
func TestCPUPerPing(t *testing.T) {
	at := time.Unix(1000, 0)
	m := cpuMark{at: at, client: 100, server: 50, idle: 1000, pings: 10000}
	n := cpuMark{at: at.Add(10 * time.Second), client: 300, server: 150, idle: 1000 + 10*clockTicks*float64(runtime.NumCPU()) - 500, pings: 20000}
	c, s, mach := m.perPing(n)
	// 200 ticks (2 s) / 10,000 pings = 200 µs; 100 ticks = 100 µs; 500
	// busy ticks (5 s) = 500 µs.
	if c != 200*time.Microsecond || s != 100*time.Microsecond || mach != 500*time.Microsecond {
		t.Fatalf("per ping: client %v server %v machine %v", c, s, mach)
	}
	if c, s, mach := m.perPing(m); c != 0 || s != 0 || mach != 0 {
		t.Fatalf("no pings: %v %v %v", c, s, mach)
	}
}

// The timer heap pops in time order whatever the order of pushes, and
// allocates nothing once its array has grown.
func TestTimerHeap(t *testing.T) {
	var h timerHeap
	base := time.Now()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 1000 {
		h.push(loopTimer{at: base.Add(time.Duration(r.IntN(1e6))), seq: uint32(i)})
	}
	last := base
	for range 1000 {
		x := h.pop()
		if x.at.Before(last) {
			t.Fatalf("popped %v after %v", x.at, last)
		}
		last = x.at
	}
	if len(h) != 0 {
		t.Fatalf("%d left", len(h))
	}
	if n := testing.AllocsPerRun(100, func() {
		h.push(loopTimer{at: base.Add(time.Second)})
		h.push(loopTimer{at: base})
		h.pop()
		h.pop()
	}); n != 0 {
		t.Fatalf("%v allocations per push and pop", n)
	}
}
