//go:build !linux

package rawsock

import (
	"context"
	"net"
	"net/netip"
	"os"
)

// Outside Linux nothing makes raw sockets (sockpool.New and ports.New
// report ErrUnsupported first), so only what the shared connection, socket
// and lease types name needs to compile.

func Close(fd int) error                                             { return ErrUnsupported }
func CloseWrite(fd int) error                                        { return ErrUnsupported }
func SetLinger(fd, sec int) error                                    { return ErrUnsupported }
func LocalAddr(fd int) (*net.TCPAddr, error)                         { return nil, ErrUnsupported }
func BindForConnect(fd int, src netip.AddrPort, o BindOptions) error { return ErrUnsupported }
func Connect(ctx context.Context, fd int, remote netip.AddrPort) (*os.File, error) {
	return nil, ErrUnsupported
}
func ProbeKernelPortSelection(ipv6 bool) error       { return ErrNoKernelPortSelection }
func NewTCPSocket(ipv6 bool, o Options) (int, error) { return -1, ErrUnsupported }
func KernelKeepAlive() (Options, error)              { return Options{}, ErrUnsupported }
