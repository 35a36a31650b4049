package batching

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"

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
	pc  batchRW
	gso atomic.Bool // UDP GSO works here; cleared on the first EIO
	// gsoTooBig is the smallest segment size the kernel refused with
	// EMSGSIZE (segments above the path MTU are not cut, while a plain
	// send of the same datagram is fragmented); 0 while none was.
	// Datagrams that large go one per message.
	gsoTooBig int
	gro       bool // UDP_GRO is on: reads may carry several datagrams

	// With GRO, reads land in big buffers of our own and are split into
	// the caller's messages; segments that did not fit wait in pending
	// (they point into bufs, which the next recvmmsg reuses only once
	// pending is empty).
	bufs    [][]byte
	pending []segment
	segOOB  [][]byte // per write message, its UDP_SEGMENT control message

	rmu   sync.Mutex // one ReadBatch at a time: it owns rmsgs
	rmsgs []ipv4.Message
	wmu   sync.Mutex // one WriteBatch at a time: it owns wmsgs
	wmsgs []ipv4.Message
}

func upgrade(conn *net.UDPConn, batchSize int, offload bool) Conn {
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
	c.segOOB = make([][]byte, batchSize)
	for i := range c.rmsgs {
		c.rmsgs[i].Buffers = make([][]byte, 1)
		c.segOOB[i] = make([]byte, udpSegmentSpace)
	}
	c.gso.Store(offload)
	for i := range c.rmsgs {
		c.rmsgs[i].OOB = make([]byte, udpControlSpace)
	}
	if rc, err := conn.SyscallConn(); err == nil {
		enableRxqOvfl(rc) // best effort: the drop counter stays 0 without it
		if offload && enableUDPGRO(rc) == nil {
			c.gro = true
			c.bufs = make([][]byte, batchSize)
			for i := range c.bufs {
				c.bufs[i] = make([]byte, 1<<16)
			}
		}
	}
	return c
}

func (c *mmsgConn) Batched() bool { return true }

type segment struct {
	data []byte
	addr netip.AddrPort
}

// ReadBatch is one recvmmsg: it blocks on the poller until a datagram is
// queued, then takes up to len(msgs) of them. With GRO a message read may
// hold many datagrams of one size; they are split into msgs (and what does
// not fit is kept for the next call, which then makes no syscall).
func (c *mmsgConn) ReadBatch(msgs []Message) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.gro {
		return c.readGRO(msgs)
	}
	k := min(len(msgs), len(c.rmsgs))
	for i := range k {
		c.rmsgs[i].Buffers[0] = msgs[i].Buf
		c.rmsgs[i].OOB = c.rmsgs[i].OOB[:cap(c.rmsgs[i].OOB)]
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
		c.noteDrops(parseUDPControl(c.rmsgs[i].OOB[:c.rmsgs[i].NN]))
	}
	c.readCalls.Add(1)
	c.readDatagrams.Add(uint64(n))
	return n, nil
}

func (c *mmsgConn) readGRO(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	if len(c.pending) == 0 {
		k := min(len(msgs), len(c.rmsgs))
		for i := range k {
			c.rmsgs[i].Buffers[0] = c.bufs[i]
			c.rmsgs[i].OOB = c.rmsgs[i].OOB[:cap(c.rmsgs[i].OOB)]
		}
		n, err := c.pc.ReadBatch(c.rmsgs[:k], 0)
		if err != nil {
			return 0, err
		}
		c.readCalls.Add(1)
		for i := range n {
			m := &c.rmsgs[i]
			var addr netip.AddrPort
			if ua, ok := m.Addr.(*net.UDPAddr); ok {
				addr = ua.AddrPort()
			}
			data := c.bufs[i][:m.N]
			ctl := parseUDPControl(m.OOB[:m.NN])
			c.noteDrops(ctl)
			size := ctl.groSize
			if size <= 0 || size >= len(data) {
				c.pending = append(c.pending, segment{data, addr})
				continue
			}
			for len(data) > 0 {
				l := min(size, len(data))
				c.pending = append(c.pending, segment{data[:l], addr})
				data = data[l:]
			}
		}
	}
	n := min(len(msgs), len(c.pending))
	for i := range n {
		seg := c.pending[i]
		msgs[i].N = copy(msgs[i].Buf, seg.data)
		msgs[i].Addr = seg.addr
	}
	c.pending = c.pending[:copy(c.pending, c.pending[n:])]
	c.readDatagrams.Add(uint64(n))
	return n, nil
}

// The single-datagram reads promoted from the embedded *net.UDPConn would,
// with GRO on, return several coalesced datagrams as one read (ten
// 100-byte datagrams as one of 1,000 bytes, no error). With GRO they read
// through ReadBatch, one datagram each, split as ReadBatch splits (a
// datagram larger than b is truncated, as a UDP read truncates); without
// GRO they are the UDPConn's own.

// ReadFromUDPAddrPort reads one datagram.
func (c *mmsgConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	if !c.gro {
		return c.UDPConn.ReadFromUDPAddrPort(b)
	}
	var m [1]Message
	m[0].Buf = b
	if _, err := c.ReadBatch(m[:]); err != nil {
		return 0, netip.AddrPort{}, err
	}
	return m[0].N, m[0].Addr, nil
}

// ReadFromUDP reads one datagram.
func (c *mmsgConn) ReadFromUDP(b []byte) (int, *net.UDPAddr, error) {
	if !c.gro {
		return c.UDPConn.ReadFromUDP(b)
	}
	n, ap, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(ap), nil
}

// ReadFrom reads one datagram (net.PacketConn).
func (c *mmsgConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if !c.gro {
		return c.UDPConn.ReadFrom(b)
	}
	n, ua, err := c.ReadFromUDP(b)
	if err != nil {
		return 0, nil, err
	}
	return n, ua, nil
}

// Read reads one datagram.
func (c *mmsgConn) Read(b []byte) (int, error) {
	if !c.gro {
		return c.UDPConn.Read(b)
	}
	n, _, err := c.ReadFromUDPAddrPort(b)
	return n, err
}

// ReadMsgUDPAddrPort reads one datagram. With GRO no control message is
// returned (oobn 0): the kernel's belongs to the coalesced whole.
func (c *mmsgConn) ReadMsgUDPAddrPort(b, oob []byte) (n, oobn, flags int, addr netip.AddrPort, err error) {
	if !c.gro {
		return c.UDPConn.ReadMsgUDPAddrPort(b, oob)
	}
	n, addr, err = c.ReadFromUDPAddrPort(b)
	return n, 0, 0, addr, err
}

// ReadMsgUDP reads one datagram; see ReadMsgUDPAddrPort.
func (c *mmsgConn) ReadMsgUDP(b, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	if !c.gro {
		return c.UDPConn.ReadMsgUDP(b, oob)
	}
	var ap netip.AddrPort
	n, oobn, flags, ap, err = c.ReadMsgUDPAddrPort(b, oob)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	return n, oobn, flags, net.UDPAddrFromAddrPort(ap), nil
}

func (c *mmsgConn) noteDrops(ctl udpControl) {
	if ctl.hasDrop {
		c.drops.Store(uint64(ctl.drops))
	}
}

// GRO reports whether reads take coalesced datagrams (UDP_GRO).
func (c *mmsgConn) GRO() bool { return c.gro }

// Limits of one UDP GSO send (include/linux/udp.h, Linux 6.x).
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65000
)

// WriteBatch sends buffs in sendmmsg calls of at most the batch size; a
// short write (the kernel took fewer) continues where it stopped. With UDP
// GSO, a run of equal-sized buffers (the last of a run may be shorter) goes
// as one message with a UDP_SEGMENT control message, its buffers as the
// iovec (no copy), and the kernel cuts it into datagrams; a kernel or
// device that refuses GSO (EIO) turns it off for this Conn and the batch is
// sent again without it; a segment size larger than the path MTU (EMSGSIZE,
// which the plain path does not meet: it fragments) is remembered, and
// datagrams of that size or larger are sent one per message from then on.
func (c *mmsgConn) WriteBatch(buffs [][]byte, addr netip.AddrPort) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	ua := net.UDPAddrFromAddrPort(addr)
	defer func() {
		for i := range c.wmsgs {
			c.wmsgs[i].Buffers, c.wmsgs[i].Addr, c.wmsgs[i].OOB = nil, nil, nil
		}
	}()
	for len(buffs) > 0 {
		gso := c.gso.Load()
		// Fill up to len(wmsgs) messages, each one datagram or one GSO run.
		k, used := 0, 0
		for k < len(c.wmsgs) && used < len(buffs) {
			run := 1
			if gso && (c.gsoTooBig == 0 || len(buffs[used]) < c.gsoTooBig) {
				run = gsoRun(buffs[used:])
			}
			m := &c.wmsgs[k]
			m.Buffers, m.Addr, m.OOB = buffs[used:used+run], ua, nil
			if run > 1 {
				m.OOB = putUDPSegment(c.segOOB[k], uint16(len(buffs[used])))
			}
			k++
			used += run
		}
		n, err := c.pc.WriteBatch(c.wmsgs[:k], 0)
		if err != nil {
			if gso && errors.Is(err, syscall.EIO) {
				c.gso.Store(false)
				continue
			}
			// The failed message is the first one: sendmmsg reports the
			// messages sent before a failure and the error on the next
			// call.
			if seg := len(c.wmsgs[0].Buffers[0]); c.wmsgs[0].OOB != nil && errors.Is(err, syscall.EMSGSIZE) {
				c.gsoTooBig = seg
				continue
			}
			return err
		}
		sent := 0
		for i := range n {
			sent += len(c.wmsgs[i].Buffers)
		}
		c.writeCalls.Add(1)
		c.writeDatagrams.Add(uint64(sent))
		buffs = buffs[sent:]
	}
	return nil
}

// gsoRun is how many of buffs, from the first, can go as one GSO send:
// equal sizes, the last possibly shorter, within the kernel's limits.
func gsoRun(buffs [][]byte) int {
	size := len(buffs[0])
	if size == 0 {
		return 1
	}
	total, n := 0, 0
	for n < len(buffs) && n < maxGSOSegments && total+len(buffs[n]) <= maxGSOBytes {
		l := len(buffs[n])
		if l > size || l == 0 {
			break
		}
		total += l
		n++
		if l < size {
			break // a shorter segment ends the run
		}
	}
	return max(1, n)
}

// GSO reports whether UDP GSO is in use.
func (c *mmsgConn) GSO() bool { return c.gso.Load() }
