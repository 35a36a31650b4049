package rawsock

import (
	"errors"
	"os"
	"syscall"
	"time"

	"github.com/connopt/connopt/sockopt"
)

// ErrUnsupported is returned on platforms where an option cannot be set.
var ErrUnsupported = sockopt.ErrUnsupported

// Every function of this package takes a raw descriptor; Control is the one
// bridge from a syscall.RawConn (net.Conn, net.Listener, *os.File).

// Control runs fn on the descriptor behind rc and returns the first error of
// the two that can happen: the one Control reports (the fd is closed, say)
// and the one fn returned.
func Control(rc syscall.RawConn, fn func(fd int) error) error {
	var inner error
	if err := rc.Control(func(fd uintptr) { inner = fn(int(fd)) }); err != nil {
		return err
	}
	return inner
}

// Options are TCP socket options, as ApplyListener sets them and
// ReadOptions reads them back. On a listening socket Linux copies all of
// them except DeferAccept, FastOpenQueue, ReuseAddr and ReusePort to every
// socket it accepts, which is what saves the per-accept setsockopt calls.
type Options struct {
	NoDelay   bool
	KeepAlive bool
	// KeepIdle, KeepInterval and KeepCount apply when KeepAlive is set;
	// the kernel keeps whole seconds.
	KeepIdle     time.Duration
	KeepInterval time.Duration
	KeepCount    int
	// RecvBuffer and SendBuffer are SO_RCVBUF/SO_SNDBUF; 0 leaves the
	// kernel's autotuning alone. Read back, Linux reports double the value
	// set, for its bookkeeping.
	RecvBuffer int
	SendBuffer int
	// DeferAccept is TCP_DEFER_ACCEPT; 0 leaves it off. Read back, it is
	// the time the kernel's SYN-ACK retransmissions cover, rounded up.
	DeferAccept time.Duration
	// FastOpenQueue is the TCP_FASTOPEN queue length; 0 leaves it off.
	FastOpenQueue int
	// ReuseAddr is SO_REUSEADDR; ApplyListener always sets it.
	ReuseAddr bool
	ReusePort bool
	// BindAddressNoPort is IP_BIND_ADDRESS_NO_PORT, for sockets that will
	// bind an address before connect and let connect pick the port.
	BindAddressNoPort bool
	// LocalPortLow and LocalPortHigh, when LocalPortLow is not 0, are
	// IP_LOCAL_PORT_RANGE: the ports the kernel may pick for this socket.
	LocalPortLow, LocalPortHigh uint16
}

// wrap is the one place a failed syscall's errno becomes an error: an
// *os.SyscallError naming the call, which errors.Is matches against the
// errno; nil stays nil.
func wrap(syscallName string, err error) error { return os.NewSyscallError(syscallName, err) }

// seconds is the whole seconds the kernel keeps for d, rounded up as
// package net rounds keep-alive times (roundDurationUp): 1.5 s is 2 s
// wherever connopt or net sets it.
func seconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}

// ErrNoKernelPortSelection is returned by ProbeKernelPortSelection when the
// running kernel lacks IP_BIND_ADDRESS_NO_PORT (Linux 4.2) or
// IP_LOCAL_PORT_RANGE (Linux 6.3).
var ErrNoKernelPortSelection = errors.New("rawsock: kernel lacks IP_BIND_ADDRESS_NO_PORT or IP_LOCAL_PORT_RANGE")

// BindOptions say how BindForConnect prepares a socket.
type BindOptions struct {
	// ReuseAddr sets SO_REUSEADDR, so an explicit source port can be shared
	// by connections to different destinations.
	ReuseAddr bool
	// NoPort sets IP_BIND_ADDRESS_NO_PORT: bind fixes the address only and
	// connect picks a port unique for the 4-tuple.
	NoPort bool
	// RangeLow and RangeHigh, when RangeLow is not 0, set
	// IP_LOCAL_PORT_RANGE: the ports the kernel may pick for this socket.
	RangeLow, RangeHigh uint16
}

// TCPOptions is the kernel-level table for o, with sockopt's defaults
// filled in.
func TCPOptions(o sockopt.Options) Options {
	ka := o.KeepAliveConfig()
	r := Options{NoDelay: !o.Nagle, KeepAlive: ka.Enable, RecvBuffer: o.ReadBuffer, SendBuffer: o.WriteBuffer}
	if ka.Enable {
		r.KeepIdle, r.KeepInterval, r.KeepCount = ka.Idle, ka.Interval, ka.Count
	}
	return r
}

// WithoutKernelDefaults is o without the keep-alive times and count that
// equal kernel's (KernelKeepAlive of the namespace the sockets are made
// in): a socket made with either reads back the same, and the second costs
// a setsockopt less for each. Everything else is kept: the kernel's
// defaults for it are off.
func (o Options) WithoutKernelDefaults(kernel Options) Options {
	if !o.KeepAlive {
		return o
	}
	if seconds(o.KeepIdle) == seconds(kernel.KeepIdle) {
		o.KeepIdle = 0
	}
	if seconds(o.KeepInterval) == seconds(kernel.KeepInterval) {
		o.KeepInterval = 0
	}
	if o.KeepCount == kernel.KeepCount {
		o.KeepCount = 0
	}
	return o
}

// DialOptions is the table of a socket made for dialing: o with sockopt's
// defaults filled in, and what b prepares for a bind before connect, set at
// creation so that the dial path only binds.
func DialOptions(o sockopt.Options, b BindOptions) Options {
	r := TCPOptions(o)
	r.ReuseAddr, r.BindAddressNoPort = b.ReuseAddr, b.NoPort
	r.LocalPortLow, r.LocalPortHigh = b.RangeLow, b.RangeHigh
	return r
}
