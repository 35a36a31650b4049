package batching

import (
	"net"
	"net/netip"
	"sync/atomic"
)

// Message is one datagram: Buf to read into (or written from), N the bytes
// read, Addr the peer.
type Message struct {
	Buf  []byte
	N    int
	Addr netip.AddrPort
}

// Conn is a UDP connection that moves datagrams in batches.
type Conn interface {
	net.PacketConn
	// ReadBatch waits for at least one datagram and reads up to len(msgs)
	// of those already queued, in one syscall where batching works. It
	// returns how many messages it filled.
	ReadBatch(msgs []Message) (int, error)
	// WriteBatch sends every buffer as a datagram to addr, batchSize per
	// syscall where batching works.
	WriteBatch(buffs [][]byte, addr netip.AddrPort) error
	// Batched reports whether recvmmsg/sendmmsg are in use; false means
	// the single-datagram fallback.
	Batched() bool
	// GSO reports whether writes of equal-sized datagrams go as one UDP
	// GSO send.
	GSO() bool
	// GRO reports whether reads take datagrams the kernel coalesced
	// (UDP_GRO) and split them.
	GRO() bool
	// Stats reads the counters.
	Stats() Stats
}

// Stats counts a Conn's work.
type Stats struct {
	ReadCalls, ReadDatagrams   uint64 // syscalls (batches) and datagrams read
	WriteCalls, WriteDatagrams uint64 // syscalls (batches) and datagrams written
	// Drops is how many datagrams the kernel dropped for a full receive
	// queue (SO_RXQ_OVFL), as of the last read; 0 where unavailable.
	Drops uint64
}

type counters struct {
	readCalls, readDatagrams, writeCalls, writeDatagrams, drops atomic.Uint64
}

func (c *counters) Stats() Stats {
	return Stats{c.readCalls.Load(), c.readDatagrams.Load(), c.writeCalls.Load(), c.writeDatagrams.Load(), c.drops.Load()}
}

// TryUpgrade returns conn as a batching Conn. batchSize bounds the
// datagrams per syscall (at least 1). Where the platform cannot batch, the
// Conn loops single reads and writes and Batched reports false.
func TryUpgrade(conn *net.UDPConn, batchSize int) Conn {
	return tryUpgrade(conn, batchSize, true)
}

// tryUpgrade is TryUpgrade with GSO and GRO optional, for the tests and
// benchmarks that compare the paths.
func tryUpgrade(conn *net.UDPConn, batchSize int, offload bool) Conn {
	batchSize = max(1, batchSize)
	if c := upgrade(conn, batchSize, offload); c != nil {
		return c
	}
	return &singleConn{UDPConn: conn}
}

// singleConn is the fallback: one datagram per syscall.
type singleConn struct {
	*net.UDPConn
	counters
}

func (c *singleConn) Batched() bool { return false }

func (c *singleConn) GSO() bool { return false }

func (c *singleConn) GRO() bool { return false }

func (c *singleConn) ReadBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	n, addr, err := c.ReadFromUDPAddrPort(msgs[0].Buf)
	if err != nil {
		return 0, err
	}
	msgs[0].N, msgs[0].Addr = n, addr
	c.readCalls.Add(1)
	c.readDatagrams.Add(1)
	return 1, nil
}

func (c *singleConn) WriteBatch(buffs [][]byte, addr netip.AddrPort) error {
	for _, b := range buffs {
		if _, err := c.WriteToUDPAddrPort(b, addr); err != nil {
			return err
		}
		c.writeCalls.Add(1)
		c.writeDatagrams.Add(1)
	}
	return nil
}
