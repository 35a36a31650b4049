package batching

import (
	"net"
	"net/netip"
	"sync"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchRW is what ipv4.PacketConn and ipv6.PacketConn have in common.
type batchRW interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

type mmsgConn struct {
	*net.UDPConn
	counters
	pc batchRW

	rmu   sync.Mutex // one ReadBatch at a time: it owns rmsgs
	rmsgs []ipv4.Message
	wmu   sync.Mutex // one WriteBatch at a time: it owns wmsgs
	wmsgs []ipv4.Message
}

func upgrade(conn *net.UDPConn, batchSize int) Conn {
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return nil
	}
	c := &mmsgConn{UDPConn: conn, rmsgs: make([]ipv4.Message, batchSize), wmsgs: make([]ipv4.Message, batchSize)}
	if la.IP.To4() != nil {
		c.pc = ipv4.NewPacketConn(conn)
	} else {
		c.pc = ipv6.NewPacketConn(conn)
	}
	for i := range c.rmsgs {
		c.rmsgs[i].Buffers = make([][]byte, 1)
		c.wmsgs[i].Buffers = make([][]byte, 1)
	}
	return c
}

func (c *mmsgConn) Batched() bool { return true }

// ReadBatch is one recvmmsg: it blocks on the poller until a datagram is
// queued, then takes up to len(msgs) of them.
func (c *mmsgConn) ReadBatch(msgs []Message) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	k := min(len(msgs), len(c.rmsgs))
	for i := range k {
		c.rmsgs[i].Buffers[0] = msgs[i].Buf
	}
	n, err := c.pc.ReadBatch(c.rmsgs[:k], 0)
	if err != nil {
		return 0, err
	}
	for i := range n {
		msgs[i].N = c.rmsgs[i].N
		if ua, ok := c.rmsgs[i].Addr.(*net.UDPAddr); ok {
			msgs[i].Addr = ua.AddrPort()
		}
		c.rmsgs[i].Buffers[0] = nil
	}
	c.readCalls.Add(1)
	c.readDatagrams.Add(uint64(n))
	return n, nil
}

// WriteBatch sends buffs in sendmmsg calls of at most the batch size; a
// short write (the kernel took fewer) continues where it stopped.
func (c *mmsgConn) WriteBatch(buffs [][]byte, addr netip.AddrPort) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	ua := net.UDPAddrFromAddrPort(addr)
	for len(buffs) > 0 {
		k := min(len(buffs), len(c.wmsgs))
		for i := range k {
			c.wmsgs[i].Buffers[0] = buffs[i]
			c.wmsgs[i].Addr = ua
		}
		n, err := c.pc.WriteBatch(c.wmsgs[:k], 0)
		if err != nil {
			return err
		}
		c.writeCalls.Add(1)
		c.writeDatagrams.Add(uint64(n))
		buffs = buffs[n:]
	}
	for i := range c.wmsgs {
		c.wmsgs[i].Buffers[0], c.wmsgs[i].Addr = nil, nil
	}
	return nil
}
