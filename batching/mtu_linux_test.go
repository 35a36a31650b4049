package batching

import (
	"bytes"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/connopt/connopt/internal/testns"
)

// Datagrams larger than the path MTU: the plain path sends them (the kernel
// fragments), and so must WriteBatch with GSO on, although the kernel
// refuses GSO segments above the MTU with EMSGSIZE.
func TestWriteBatchAboveMTU(t *testing.T) {
	ns := testns.New(t, nil)
	if out, err := exec.Command("ip", "-n", ns.Name, "link", "set", "lo", "mtu", "1500").CombinedOutput(); err != nil {
		t.Fatalf("setting the MTU: %v: %s", err, out)
	}
	var recv, send *net.UDPConn
	ns.Do(t, func() {
		recv, send = listenUDP(t), listenUDP(t)
	})
	defer recv.Close()
	c := TryUpgrade(send, 64)
	defer c.Close()
	if !c.GSO() {
		t.Skip("UDP GSO is not available here")
	}
	dst := recv.LocalAddr().(*net.UDPAddr).AddrPort()
	const n, size = 40, 2000
	for _, path := range []struct {
		name string
		send func(bufs [][]byte, dst netip.AddrPort) error
	}{
		{"stock WriteTo", func(bufs [][]byte, dst netip.AddrPort) error {
			for _, b := range bufs {
				if _, err := send.WriteToUDPAddrPort(b, dst); err != nil {
					return err
				}
			}
			return nil
		}},
		{"WriteBatch", c.WriteBatch},
		{"WriteBatch again", c.WriteBatch}, // the refused size is remembered
	} {
		t.Run(path.name, func(t *testing.T) {
			bufs := make([][]byte, n)
			for i := range bufs {
				bufs[i] = make([]byte, size)
				payload(bufs[i], uint64(i))
			}
			if err := path.send(bufs, dst); err != nil {
				t.Fatalf("sending %d datagrams of %d bytes over a 1500-byte MTU: %v", n, size, err)
			}
			recv.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 65536)
			for i := range n {
				m, err := recv.Read(b)
				if err != nil {
					t.Fatalf("datagram %d: %v", i, err)
				}
				if !bytes.Equal(b[:m], bufs[i]) {
					t.Fatalf("datagram %d: %d bytes, differs from what was sent", i, m)
				}
			}
		})
	}
	if !c.GSO() {
		t.Error("EMSGSIZE turned GSO off for every size")
	}
}
