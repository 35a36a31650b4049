package listener

import (
	"io"
	"net"
	"testing"
)

// benchPair returns a server-side connection accepted by accept and a client
// that drains everything written to it.
func benchPair(b *testing.B, ln net.Listener) net.Conn {
	b.Helper()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	cc.Write([]byte("x")) // past TCP_DEFER_ACCEPT
	sc, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	io.ReadFull(sc, make([]byte, 1))
	go io.Copy(io.Discard, cc)
	b.Cleanup(func() { sc.Close(); cc.Close() })
	return sc
}

// BenchmarkWrite compares a write through Conn with one through the bare
// *net.TCPConn: the wrapper must add no allocation and no measurable time.
func BenchmarkWrite(b *testing.B) {
	msg := make([]byte, 128)
	for _, tc := range []struct {
		name string
		wrap bool
	}{{"TCPConn", false}, {"Conn", true}} {
		b.Run(tc.name, func(b *testing.B) {
			ln, err := Listen("tcp", "127.0.0.1:0", Config{WrapConns: tc.wrap})
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			c := benchPair(b, ln)
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAccept measures dial, accept and close of one connection on a
// stock listener and on this package's; syscall counts per connection are
// in make bench-listener.
func BenchmarkAccept(b *testing.B) {
	for _, name := range []string{"stock", "connopt"} {
		b.Run(name, func(b *testing.B) {
			var ln net.Listener
			var err error
			if name == "stock" {
				ln, err = net.Listen("tcp", "127.0.0.1:0")
			} else {
				ln, err = Listen("tcp", "127.0.0.1:0", Config{})
			}
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			b.ReportAllocs()
			for b.Loop() {
				cc, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				cc.Write([]byte("x"))
				sc, err := ln.Accept()
				if err != nil {
					b.Fatal(err)
				}
				sc.Close()
				cc.Close()
			}
		})
	}
}
