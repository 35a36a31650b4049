package client

import (
	"net"
	"testing"
)

// BenchmarkDialClose dials and closes against a loopback listener, stock
// net.Dialer as the control: go test -run '^$' -bench DialClose -benchmem
// ./client (allocations per dial; CPU is bench-client's, per process).
func BenchmarkDialClose(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := ln.Addr().String()
	nd := &net.Dialer{}
	dials := []struct {
		name string
		cfg  *Config
	}{{"net.Dialer", nil}, {"client.Dialer", &Config{}}, {"client.Dialer (no watch)", &Config{DisablePeerWatch: true}}}
	for _, dc := range dials {
		b.Run(dc.name, func(b *testing.B) {
			dial := func() (net.Conn, error) { return nd.Dial("tcp", addr) }
			if dc.cfg != nil {
				d, err := NewDialer(*dc.cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer d.Close()
				dial = func() (net.Conn, error) { return d.Dial(addr) }
			}
			b.ReportAllocs()
			for b.Loop() {
				c, err := dial()
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
