package tcpconn

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"

	"github.com/connopt/connopt/internal/rawsock"
)

// FileConn is a connected TCP socket held by an *os.File registered with
// the runtime poller: what a dialer that connects its own sockets gets
// without paying net.FileConn's dup, getsockopt, getsockname and
// getpeername. Reads and writes are internal/poll's, the code *net.TCPConn
// uses (read first, wait only on EAGAIN). Errors are shaped as the net
// package shapes them: *net.OpError with both addresses, net.ErrClosed
// after Close, os.ErrDeadlineExceeded on timeouts, ErrPeerClosed when the
// peer has gone away.
type FileConn struct {
	f       *os.File
	network string
	raddr   *net.TCPAddr
	laddr   atomic.Pointer[net.TCPAddr]
	state
}

var (
	_ net.Conn                        = (*FileConn)(nil)
	_ io.ReaderFrom                   = (*FileConn)(nil)
	_ io.WriterTo                     = (*FileConn)(nil)
	_ syscall.Conn                    = (*FileConn)(nil)
	_ interface{ CloseWrite() error } = (*FileConn)(nil)
)

// NewFile wraps f, a connected TCP socket, as a net.Conn. laddr may be nil:
// LocalAddr then asks the kernel on first use. With watched, the caller
// will tell the connection when its peer closes (MarkGone), and writes from
// then on fail at once.
func NewFile(f *os.File, network string, raddr, laddr *net.TCPAddr, counters *Counters, onClose func(peerClosed bool), watched bool) *FileConn {
	c := &FileConn{f: f, network: network, raddr: raddr}
	if laddr != nil {
		c.laddr.Store(laddr)
	}
	c.init(f, c.opError, counters, onClose)
	c.watched = watched
	return c
}

// errFileClosing is internal/poll's error for a RawConn of a closed file,
// which os.File passes through from SyscallConn's Control unconverted.
const errFileClosing = "use of closed file"

// opDeadline is the op of a deadline setter's error: "set", with the
// local address alone, as net shapes it.
const opDeadline = "set deadline"

// opError reshapes an *os.File error as net would have returned it.
func (c *FileConn) opError(op string, err error) error {
	inner := err
	var pe *os.PathError
	if errors.As(err, &pe) {
		inner = pe.Err
	}
	switch _, other := inner.(*net.OpError); {
	case other:
		// The other end of a ReadFrom or WriteTo failed: net keeps its
		// error whole inside the outer one.
	case errors.Is(inner, os.ErrClosed), inner.Error() == errFileClosing:
		inner = net.ErrClosed
	case errors.Is(inner, os.ErrDeadlineExceeded):
		inner = os.ErrDeadlineExceeded
	default:
		if errno, ok := inner.(syscall.Errno); ok {
			inner = os.NewSyscallError(op, errno)
		}
	}
	var la net.Addr
	if a := c.localAddr(); a != nil {
		la = a
	}
	if op == opDeadline {
		// net names only the local address in deadline errors.
		return &net.OpError{Op: "set", Net: c.network, Addr: la, Err: inner}
	}
	return &net.OpError{Op: op, Net: c.network, Source: la, Addr: c.raddr, Err: inner}
}

// Close closes the connection. It may be called more than once; only the
// first call counts and runs the owner's hook. The local address is
// learned first if it is not known yet, so that errors after Close name it
// as *net.TCPConn's do.
func (c *FileConn) Close() error {
	if !c.closed.Load() {
		c.localAddr()
	}
	err := c.f.Close()
	c.afterClose()
	if err != nil {
		return c.opError("close", err)
	}
	return nil
}

// control runs fn on the socket's descriptor, or fails with net.ErrClosed
// after Close.
func (c *FileConn) control(op string, fn func(fd int) error) error {
	if c.closed.Load() {
		return c.opError(op, net.ErrClosed)
	}
	rc, err := c.f.SyscallConn()
	if err == nil {
		err = rawsock.Control(rc, fn)
	}
	if err != nil {
		return c.opError(op, err)
	}
	return nil
}

// CloseWrite sends FIN and leaves the read side open.
func (c *FileConn) CloseWrite() error { return c.control("close", rawsock.CloseWrite) }

// SetLinger is *net.TCPConn's SetLinger: sec < 0 is the default, 0 makes
// Close send RST.
func (c *FileConn) SetLinger(sec int) error {
	return c.control("set", func(fd int) error { return rawsock.SetLinger(fd, sec) })
}

// LocalAddr is the local address, a *net.TCPAddr. When the dialer did not
// know the port (the kernel chose it at connect), the first call asks the
// kernel (getsockname) and the answer is kept.
func (c *FileConn) LocalAddr() net.Addr {
	if la := c.localAddr(); la != nil {
		return la
	}
	return &net.TCPAddr{}
}

func (c *FileConn) localAddr() *net.TCPAddr {
	if la := c.laddr.Load(); la != nil {
		return la
	}
	rc, err := c.f.SyscallConn()
	if err != nil {
		return nil
	}
	var la *net.TCPAddr
	if rawsock.Control(rc, func(fd int) (err error) { la, err = rawsock.LocalAddr(fd); return err }) != nil {
		return nil
	}
	c.laddr.Store(la)
	return la
}

// RemoteAddr is the address dialed, a *net.TCPAddr.
func (c *FileConn) RemoteAddr() net.Addr { return c.raddr }

// SyscallConn gives access to the socket.
func (c *FileConn) SyscallConn() (syscall.RawConn, error) { return c.f.SyscallConn() }
