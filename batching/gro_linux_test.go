package batching

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
)

// With GRO on, every single-datagram read the Conn has (its own and the
// ones of the *net.UDPConn it wraps) returns one datagram per call, as a
// plain *net.UDPConn (the control) does, though the kernel hands the ten
// 100-byte datagrams of one GSO send over as one 1,000-byte read.
func TestSingleReadsSplitGRO(t *testing.T) {
	reads := map[string]func(c any, b []byte) (int, netip.AddrPort, error){
		"Read": func(c any, b []byte) (int, netip.AddrPort, error) {
			n, err := c.(interface{ Read([]byte) (int, error) }).Read(b)
			return n, netip.AddrPort{}, err
		},
		"ReadFrom": func(c any, b []byte) (int, netip.AddrPort, error) {
			n, a, err := c.(net.PacketConn).ReadFrom(b)
			if err != nil {
				return n, netip.AddrPort{}, err
			}
			return n, a.(*net.UDPAddr).AddrPort(), nil
		},
		"ReadFromUDP": func(c any, b []byte) (int, netip.AddrPort, error) {
			n, a, err := c.(interface {
				ReadFromUDP([]byte) (int, *net.UDPAddr, error)
			}).ReadFromUDP(b)
			if err != nil {
				return n, netip.AddrPort{}, err
			}
			return n, a.AddrPort(), nil
		},
		"ReadFromUDPAddrPort": func(c any, b []byte) (int, netip.AddrPort, error) {
			return c.(interface {
				ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
			}).ReadFromUDPAddrPort(b)
		},
		"ReadMsgUDP": func(c any, b []byte) (int, netip.AddrPort, error) {
			n, _, _, a, err := c.(interface {
				ReadMsgUDP(b, oob []byte) (int, int, int, *net.UDPAddr, error)
			}).ReadMsgUDP(b, make([]byte, 64))
			if err != nil {
				return n, netip.AddrPort{}, err
			}
			return n, a.AddrPort(), nil
		},
		"ReadMsgUDPAddrPort": func(c any, b []byte) (int, netip.AddrPort, error) {
			n, _, _, a, err := c.(interface {
				ReadMsgUDPAddrPort(b, oob []byte) (int, int, int, netip.AddrPort, error)
			}).ReadMsgUDPAddrPort(b, make([]byte, 64))
			return n, a, err
		},
	}
	for name, read := range reads {
		for _, who := range []string{"stock", "connopt"} {
			t.Run(name+"/"+who, func(t *testing.T) {
				sc, cc := listenUDP(t), listenUDP(t)
				cli := tryUpgrade(cc, 64, true)
				defer cli.Close()
				var reader any = sc
				if who == "connopt" {
					srv := tryUpgrade(sc, 64, true)
					if !srv.GRO() || !cli.GSO() {
						t.Skip("no UDP GSO/GRO here: nothing is coalesced")
					}
					reader = srv
				}
				defer sc.Close()
				const count, size = 10, 100
				buffs := make([][]byte, count)
				for i := range buffs {
					buffs[i] = make([]byte, size)
					payload(buffs[i], uint64(i))
				}
				if err := cli.WriteBatch(buffs, sc.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
					t.Fatal(err)
				}
				sc.SetReadDeadline(time.Now().Add(5 * time.Second))
				from := cc.LocalAddr().(*net.UDPAddr).AddrPort()
				b := make([]byte, 2048)
				for i := range count {
					n, addr, err := read(reader, b)
					if err != nil {
						t.Fatalf("read %d: %v", i, err)
					}
					if n != size || !bytes.Equal(b[:n], buffs[i]) {
						t.Fatalf("read %d: %d bytes, want datagram %d (%d bytes)", i, n, i, size)
					}
					if name != "Read" && addr != from {
						t.Fatalf("read %d: from %v, want %v", i, addr, from)
					}
				}
			})
		}
	}
}
