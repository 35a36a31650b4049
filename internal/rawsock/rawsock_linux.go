package rawsock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SetInt sets an int socket option.
func SetInt(fd, level, name, value int) error {
	return wrap("setsockopt", unix.SetsockoptInt(fd, level, name, value))
}

func getInt(fd, level, name int) (int, error) {
	v, err := unix.GetsockoptInt(fd, level, name)
	return v, wrap("getsockopt", err)
}

// ApplyListener sets o on fd, a TCP socket that is about to be bound and put
// in the listening state. SO_REUSEADDR is set whatever o says (Go's listener
// code sets it too): a restarted server must bind while its old connections
// sit in TIME_WAIT.
func ApplyListener(fd int, o Options) error {
	o.ReuseAddr = true
	return Apply(fd, o)
}

// Apply sets on fd the options o asks for, one setsockopt each, and leaves
// the rest at the kernel's defaults.
func Apply(fd int, o Options) error {
	type opt struct {
		level, name, value int
		when               bool
	}
	opts := [...]opt{
		{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1, o.NoDelay},
		{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, o.KeepAlive},
		{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, seconds(o.KeepIdle), o.KeepAlive && o.KeepIdle > 0},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, seconds(o.KeepInterval), o.KeepAlive && o.KeepInterval > 0},
		{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, o.KeepCount, o.KeepAlive && o.KeepCount > 0},
		{unix.SOL_SOCKET, unix.SO_RCVBUF, o.RecvBuffer, o.RecvBuffer > 0},
		{unix.SOL_SOCKET, unix.SO_SNDBUF, o.SendBuffer, o.SendBuffer > 0},
		{unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, seconds(o.DeferAccept), o.DeferAccept > 0},
		{unix.IPPROTO_TCP, unix.TCP_FASTOPEN, o.FastOpenQueue, o.FastOpenQueue > 0},
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, o.ReuseAddr},
		{unix.SOL_SOCKET, unix.SO_REUSEPORT, 1, o.ReusePort},
		{unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1, o.BindAddressNoPort},
		{unix.IPPROTO_IP, unix.IP_LOCAL_PORT_RANGE, int(uint32(o.LocalPortLow) | uint32(o.LocalPortHigh)<<16), o.LocalPortLow != 0},
	}
	for _, op := range opts {
		if !op.when {
			continue
		}
		if err := SetInt(fd, op.level, op.name, op.value); err != nil {
			return err
		}
	}
	return nil
}

// NewTCPSocket creates a non-blocking, close-on-exec TCP socket in the
// calling thread's network namespace and applies o to it. On error nothing
// is left open.
func NewTCPSocket(ipv6 bool, o Options) (int, error) {
	family := unix.AF_INET
	if ipv6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, wrap("socket", err)
	}
	if err := Apply(fd, o); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Close closes a descriptor this package created.
func Close(fd int) error { return wrap("close", unix.Close(fd)) }

// soNetnsCookie is SO_NETNS_COOKIE (Linux 5.14) in asm-generic/socket.h,
// which amd64, arm64 and riscv64 use; x/sys does not define it yet.
const soNetnsCookie = 71

// NetnsCookie returns the cookie of the network namespace fd belongs to:
// equal cookies mean the same namespace, and a cookie is never reused.
func NetnsCookie(fd int) (uint64, error) {
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, soNetnsCookie)
	return cookie, wrap("getsockopt", err)
}

// ReadOptions reads back the options of fd. It is meant for tests and
// diagnostics, not for a per-connection path: it costs one getsockopt per
// field.
func ReadOptions(fd int) (Options, error) {
	var o Options
	err := func() error {
		fields := [...]struct {
			level, name int
			set         func(int)
		}{
			{unix.IPPROTO_TCP, unix.TCP_NODELAY, func(v int) { o.NoDelay = v != 0 }},
			{unix.SOL_SOCKET, unix.SO_KEEPALIVE, func(v int) { o.KeepAlive = v != 0 }},
			{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, func(v int) { o.KeepIdle = time.Duration(v) * time.Second }},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, func(v int) { o.KeepInterval = time.Duration(v) * time.Second }},
			{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, func(v int) { o.KeepCount = v }},
			{unix.SOL_SOCKET, unix.SO_RCVBUF, func(v int) { o.RecvBuffer = v }},
			{unix.SOL_SOCKET, unix.SO_SNDBUF, func(v int) { o.SendBuffer = v }},
			{unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, func(v int) { o.DeferAccept = time.Duration(v) * time.Second }},
			{unix.IPPROTO_TCP, unix.TCP_FASTOPEN, func(v int) { o.FastOpenQueue = v }},
			{unix.SOL_SOCKET, unix.SO_REUSEADDR, func(v int) { o.ReuseAddr = v != 0 }},
			{unix.SOL_SOCKET, unix.SO_REUSEPORT, func(v int) { o.ReusePort = v != 0 }},
		}
		for _, f := range fields {
			v, err := getInt(fd, f.level, f.name)
			if err != nil {
				return err
			}
			f.set(v)
		}
		return nil
	}()
	return o, err
}

// SetListenBacklog calls listen(2) again on an already listening socket,
// which Linux accepts and uses to change the accept queue's length. Go's net
// package always listens with net.core.somaxconn.
func SetListenBacklog(fd, backlog int) error { return wrap("listen", unix.Listen(fd, backlog)) }

// Dup returns a close-on-exec copy of fd. Unlike net's File methods it
// leaves the shared file status flags alone: the socket stays non-blocking
// for every process that holds it.
func Dup(fd int) (int, error) {
	n, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	return n, wrap("fcntl", err)
}

// BindForConnect applies o to fd and binds it to src (port 0 lets the kernel
// choose), ready for connect.
func BindForConnect(fd int, src netip.AddrPort, o BindOptions) error {
	if o.ReuseAddr {
		if err := SetInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return err
		}
	}
	if o.NoPort {
		if err := SetInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1); err != nil {
			return err
		}
	}
	if o.RangeLow != 0 {
		if err := SetInt(fd, unix.IPPROTO_IP, unix.IP_LOCAL_PORT_RANGE, int(uint32(o.RangeLow)|uint32(o.RangeHigh)<<16)); err != nil {
			return err
		}
	}
	sa, err := sockaddr(src)
	if err != nil {
		return err
	}
	return wrap("bind", unix.Bind(fd, sa))
}

func sockaddr(ap netip.AddrPort) (unix.Sockaddr, error) {
	a := ap.Addr()
	if a.Is4() || a.Is4In6() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.Unmap().As4()}, nil
	}
	sa := &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
	if z := a.Zone(); z != "" {
		ifi, err := net.InterfaceByName(z)
		if err != nil {
			return nil, err
		}
		sa.ZoneId = uint32(ifi.Index)
	}
	return sa, nil
}

// ProbeKernelPortSelection checks, on a throwaway socket of the family,
// that the kernel accepts IP_BIND_ADDRESS_NO_PORT and IP_LOCAL_PORT_RANGE.
func ProbeKernelPortSelection(ipv6 bool) error {
	family := unix.AF_INET
	if ipv6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return wrap("socket", err)
	}
	defer unix.Close(fd)
	for _, name := range []int{unix.IP_BIND_ADDRESS_NO_PORT, unix.IP_LOCAL_PORT_RANGE} {
		if err := SetInt(fd, unix.IPPROTO_IP, name, 1); err != nil {
			if errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("%w: %w", ErrNoKernelPortSelection, err)
			}
			return err
		}
	}
	return nil
}

// aLongTimeAgo is a deadline in the past, to wake a pending wait.
var aLongTimeAgo = time.Unix(1, 0)

// Connect connects fd, a non-blocking TCP socket, to remote and returns it
// as an *os.File registered with the runtime poller. The wait for the
// handshake parks the goroutine on the poller; ctx bounds it. On error fd is
// closed.
//
// Syscalls: fcntl(F_GETFL) and epoll_ctl (os.NewFile), connect, and a
// second connect once the poller reports the socket writable. The second
// connect says everything getsockopt(SO_ERROR) would (0 once connected, the
// failure, or EALREADY if the wake-up came before the handshake finished)
// and also covers a stale readiness event, for which Go's net package spends
// a getpeername.
func Connect(ctx context.Context, fd int, remote netip.AddrPort) (*os.File, error) {
	sa, err := sockaddr(remote)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "tcp")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		f.SetWriteDeadline(d)
	}
	var stop func() bool
	var interrupted chan struct{}
	if ctx.Done() != nil {
		interrupted = make(chan struct{})
		stop = context.AfterFunc(ctx, func() { f.SetWriteDeadline(aLongTimeAgo); close(interrupted) })
	}
	var cerr error
	err = rc.Write(func(fd uintptr) bool {
		cerr = unix.Connect(int(fd), sa)
		switch cerr {
		case unix.EINPROGRESS, unix.EALREADY, unix.EINTR:
			return false // wait for writability, then ask again
		case unix.EISCONN:
			cerr = nil
		}
		return true
	})
	if err == nil {
		err = wrap("connect", cerr)
	}
	if err == nil {
		f.SetWriteDeadline(time.Time{})
	}
	testHookConnected()
	if stop != nil && !stop() {
		// The context ended and its AfterFunc ran or is running: it may
		// set the past deadline after the line above cleared it, which
		// would poison a connection that did connect. Wait for it and
		// fail as net does (Go issue 16523, net/fd_unix.go's !stop()).
		<-interrupted
		f.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		f.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	return f, nil
}

// testHookConnected runs after the connect wait, before Connect decides
// its result; tests end the context there.
var testHookConnected = func() {}

// LocalAddr returns the socket's bound address (getsockname). The standard
// library's syscall.Getsockname, not x/sys's: for AF_INET and AF_INET6 the
// latter also asks SO_PROTOCOL (to recognise L2TP), one getsockopt more.
func LocalAddr(fd int) (*net.TCPAddr, error) {
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return nil, wrap("getsockname", err)
	}
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}, nil
	case *syscall.SockaddrInet6:
		a := &net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifi.Name
			}
		}
		return a, nil
	}
	return nil, fmt.Errorf("rawsock: getsockname returned %T", sa)
}

// CloseWrite shuts down the sending side (FIN) of fd.
func CloseWrite(fd int) error { return wrap("shutdown", unix.Shutdown(fd, unix.SHUT_WR)) }

// SetLinger sets SO_LINGER: sec < 0 turns it off, 0 makes Close send RST.
func SetLinger(fd, sec int) error {
	l := unix.Linger{}
	if sec >= 0 {
		l = unix.Linger{Onoff: 1, Linger: int32(sec)}
	}
	return wrap("setsockopt", unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &l))
}

// KernelKeepAlive reads the keep-alive settings a TCP socket of the calling
// thread's namespace has when nobody sets them (net.ipv4.tcp_keepalive_time,
// tcp_keepalive_intvl, tcp_keepalive_probes), as Options with KeepAlive
// set: what Options.WithoutKernelDefaults compares against.
func KernelKeepAlive() (Options, error) {
	o := Options{KeepAlive: true}
	for _, f := range [...]struct {
		name string
		set  func(int)
	}{
		{"tcp_keepalive_time", func(v int) { o.KeepIdle = time.Duration(v) * time.Second }},
		{"tcp_keepalive_intvl", func(v int) { o.KeepInterval = time.Duration(v) * time.Second }},
		{"tcp_keepalive_probes", func(v int) { o.KeepCount = v }},
	} {
		b, err := os.ReadFile("/proc/sys/net/ipv4/" + f.name)
		if err != nil {
			return Options{}, err
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return Options{}, fmt.Errorf("/proc/sys/net/ipv4/%s: %w", f.name, err)
		}
		f.set(v)
	}
	return o, nil
}
