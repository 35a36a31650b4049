package batching

import (
	"encoding/binary"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/connopt/connopt/internal/rawsock"
)

// The UDP control messages batching sends and reads, beside the code that
// uses them: UDP_SEGMENT on sends (GSO, Linux 4.18), UDP_GRO and
// SO_RXQ_OVFL on reads. Built and parsed with binary.NativeEndian, as the
// kernel lays them out, without unsafe casts.

// udpSegmentSpace is the length of a UDP_SEGMENT control message.
var udpSegmentSpace = unix.CmsgSpace(2)

// udpControlSpace is the control buffer a read needs for parseUDPControl.
var udpControlSpace = 2 * unix.CmsgSpace(4)

// putUDPSegment writes into b (udpSegmentSpace bytes) the control message
// that asks the kernel to split one send into datagrams of size bytes, and
// returns b.
func putUDPSegment(b []byte, size uint16) []byte {
	b = b[:udpSegmentSpace]
	clear(b)
	putCmsgHeader(b, unix.SOL_UDP, unix.UDP_SEGMENT, 2)
	binary.NativeEndian.PutUint16(b[unix.CmsgLen(0):], size)
	return b
}

// putCmsgHeader writes a struct cmsghdr: a size_t length, then level and
// type as ints.
func putCmsgHeader(b []byte, level, typ, dataLen int) {
	n := unix.CmsgLen(dataLen)
	if unix.SizeofCmsghdr == 16 {
		binary.NativeEndian.PutUint64(b, uint64(n))
		b = b[8:]
	} else {
		binary.NativeEndian.PutUint32(b, uint32(n))
		b = b[4:]
	}
	binary.NativeEndian.PutUint32(b, uint32(int32(level)))
	binary.NativeEndian.PutUint32(b[4:], uint32(int32(typ)))
}

// udpControl is what batching reads from a datagram's control messages.
type udpControl struct {
	groSize int    // segment size of a coalesced read (UDP_GRO), or 0
	drops   uint32 // datagrams the socket dropped so far (SO_RXQ_OVFL)
	hasDrop bool   // drops was present
}

// parseUDPControl reads UDP_GRO and SO_RXQ_OVFL out of oob, without
// allocating.
func parseUDPControl(oob []byte) udpControl {
	var c udpControl
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			break
		}
		switch {
		case h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 4:
			c.groSize = int(int32(binary.NativeEndian.Uint32(data)))
		case h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && len(data) >= 2:
			c.groSize = int(binary.NativeEndian.Uint16(data))
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4:
			c.drops, c.hasDrop = binary.NativeEndian.Uint32(data), true
		}
		oob = rest
	}
	return c
}

// enableUDPGRO asks the kernel to hand the socket coalesced datagrams
// (UDP_GRO, Linux 5.0); each read then carries the segment size.
func enableUDPGRO(rc syscall.RawConn) error {
	return rawsock.Control(rc, func(fd int) error { return rawsock.SetInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1) })
}

// enableRxqOvfl makes every read carry the socket's drop count
// (SO_RXQ_OVFL).
func enableRxqOvfl(rc syscall.RawConn) error {
	return rawsock.Control(rc, func(fd int) error { return rawsock.SetInt(fd, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1) })
}
