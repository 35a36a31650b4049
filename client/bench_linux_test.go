package client

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/connopt/connopt/internal/testkit"
)

// processCPU is the process's user and system time so far.
func processCPU(b *testing.B) time.Duration {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		b.Fatal(err)
	}
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// BenchmarkDialClose dials and closes against a loopback listener in the
// same process that closes each connection as soon as it accepts it (so
// the upstream often closes first, and the peer watch wakes), stock
// net.Dialer as the control, with and without the connect timeout
// client.Dialer always applies: go test -run '^$' -bench DialClose
// -benchmem ./client. cpu-ns/op is the whole process's CPU (the listener's
// included) per dial; allocations are the dialer's and the listener's.
func BenchmarkDialClose(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go testkit.CloseEach(ln)
	addr := ln.Addr().String()
	dials := []struct {
		name string
		cfg  *Config
		nd   *net.Dialer
	}{
		{"net.Dialer", nil, &net.Dialer{}},
		{"net.Dialer (3 s timeout)", nil, &net.Dialer{Timeout: DefaultConnectTimeout}},
		{"client.Dialer", &Config{}, nil},
		{"client.Dialer (no watch)", &Config{DisablePeerWatch: true}, nil},
	}
	for _, dc := range dials {
		b.Run(dc.name, func(b *testing.B) {
			dial := func() (net.Conn, error) { return dc.nd.Dial("tcp", addr) }
			if dc.cfg != nil {
				d, err := NewDialer(*dc.cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer d.Close()
				dial = func() (net.Conn, error) { return d.Dial(addr) }
			}
			b.ReportAllocs()
			cpu0 := processCPU(b)
			for b.Loop() {
				c, err := dial()
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
