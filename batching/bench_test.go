package batching

import (
	"net"
	"testing"
)

// BenchmarkSend sends 1,200-byte datagrams to a loopback socket that a
// reader drains (drops at the receiver do not slow the sender), per
// datagram, with the plain one-write-per-datagram path and with sendmmsg.
func BenchmarkSend(b *testing.B) {
	for _, tc := range []struct {
		name    string
		upgrade func(*net.UDPConn) Conn
	}{
		{"single", func(c *net.UDPConn) Conn { return &singleConn{UDPConn: c} }},
		{"sendmmsg", func(c *net.UDPConn) Conn { return tryUpgrade(c, 64, false) }},
		{"sendmmsg+gso", func(c *net.UDPConn) Conn { return TryUpgrade(c, 64) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			rc, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			defer rc.Close()
			go func() {
				buf := make([]byte, 2048)
				for {
					if _, _, err := rc.ReadFromUDPAddrPort(buf); err != nil {
						return
					}
				}
			}()
			sc, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			c := tc.upgrade(sc)
			defer c.Close()
			dst := rc.LocalAddr().(*net.UDPAddr).AddrPort()
			buffs := make([][]byte, 64)
			for i := range buffs {
				buffs[i] = make([]byte, 1200)
			}
			b.SetBytes(1200)
			b.ReportAllocs()
			sent := 0
			for sent < b.N {
				k := min(64, b.N-sent)
				if err := c.WriteBatch(buffs[:k], dst); err != nil {
					b.Fatal(err)
				}
				sent += k
			}
			s := c.Stats()
			b.ReportMetric(float64(s.WriteCalls)/float64(s.WriteDatagrams), "syscalls/datagram")
		})
	}
}
