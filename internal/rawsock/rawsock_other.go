//go:build !linux

package rawsock

import (
	"context"
	"net"
	"net/netip"
	"os"
	"syscall"
)

// ApplyListener reports ErrUnsupported: outside Linux connopt leaves socket
// options to the Go runtime.
func ApplyListener(fd int, o Options) error { return ErrUnsupported }

// ReadOptions reports ErrUnsupported outside Linux.
func ReadOptions(rc syscall.RawConn) (Options, error) { return Options{}, ErrUnsupported }

// SetListenBacklog reports ErrUnsupported outside Linux.
func SetListenBacklog(rc syscall.RawConn, backlog int) error { return ErrUnsupported }

// BindForConnect reports ErrUnsupported outside Linux.
func BindForConnect(fd int, src netip.AddrPort, o BindOptions) error { return ErrUnsupported }

// ProbeKernelPortSelection reports ErrNoKernelPortSelection outside Linux.
func ProbeKernelPortSelection(ipv6 bool) error { return ErrNoKernelPortSelection }

// Apply reports ErrUnsupported outside Linux.
func Apply(fd int, o Options) error { return ErrUnsupported }

// NewTCPSocket reports ErrUnsupported outside Linux.
func NewTCPSocket(ipv6 bool, o Options) (int, error) { return -1, ErrUnsupported }

// Close reports ErrUnsupported outside Linux.
func Close(fd int) error { return ErrUnsupported }

// NetnsCookie reports ErrUnsupported outside Linux.
func NetnsCookie(fd int) (uint64, error) { return 0, ErrUnsupported }

// Connect reports ErrUnsupported outside Linux.
func Connect(ctx context.Context, fd int, remote netip.AddrPort) (*os.File, error) {
	return nil, ErrUnsupported
}

// LocalAddr reports ErrUnsupported outside Linux.
func LocalAddr(rc syscall.RawConn) (*net.TCPAddr, error) { return nil, ErrUnsupported }

// CloseWrite reports ErrUnsupported outside Linux.
func CloseWrite(rc syscall.RawConn) error { return ErrUnsupported }

// SetLinger reports ErrUnsupported outside Linux.
func SetLinger(rc syscall.RawConn, sec int) error { return ErrUnsupported }

// UDPSegmentSpace is 0 outside Linux: there is no UDP GSO.
var UDPSegmentSpace = 0

// PutUDPSegment returns nil outside Linux.
func PutUDPSegment(b []byte, size uint16) []byte { return nil }

// EnableUDPGRO reports ErrUnsupported outside Linux.
func EnableUDPGRO(rc syscall.RawConn) error { return ErrUnsupported }

// UDPControl is what connopt reads from a datagram's control messages.
type UDPControl struct {
	GROSize int
	Drops   uint32
	HasDrop bool
}

// ParseUDPControl finds nothing outside Linux.
func ParseUDPControl(oob []byte) UDPControl { return UDPControl{} }

// EnableRxqOvfl reports ErrUnsupported outside Linux.
func EnableRxqOvfl(rc syscall.RawConn) error { return ErrUnsupported }

// UDPControlSpace is 0 outside Linux.
var UDPControlSpace = 0
