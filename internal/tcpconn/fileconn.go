package tcpconn

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/connopt/connopt/internal/rawsock"
)

// FileConn is a connected TCP socket held by an *os.File registered with
// the runtime poller: what a dialer that connects its own sockets gets
// without paying net.FileConn's dup, getsockopt, getsockname and
// getpeername. Reads and writes are internal/poll's, the code *net.TCPConn
// uses (read first, wait only on EAGAIN). Errors are shaped as the net
// package shapes them: *net.OpError with the addresses, net.ErrClosed after
// Close, os.ErrDeadlineExceeded on timeouts, ErrPeerClosed when the peer
// has gone away.
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
// LocalAddr then asks the kernel on first use.
func NewFile(f *os.File, network string, raddr, laddr *net.TCPAddr, counters *Counters, onClose func(peerClosed bool)) *FileConn {
	c := &FileConn{f: f, network: network, raddr: raddr}
	if laddr != nil {
		c.laddr.Store(laddr)
	}
	c.init(counters, onClose)
	return c
}

// opError reshapes an *os.File error as net would have returned it.
func (c *FileConn) opError(op string, err error) error {
	inner := err
	var pe *os.PathError
	if errors.As(err, &pe) {
		inner = pe.Err
	}
	switch {
	case errors.Is(inner, os.ErrClosed):
		inner = net.ErrClosed
	case errors.Is(inner, os.ErrDeadlineExceeded):
		inner = os.ErrDeadlineExceeded
	default:
		if errno, ok := inner.(syscall.Errno); ok {
			inner = os.NewSyscallError(op, errno)
		}
	}
	var src net.Addr
	if la := c.laddr.Load(); la != nil {
		src = la
	}
	return &net.OpError{Op: op, Net: c.network, Source: src, Addr: c.raddr, Err: inner}
}

// Read reads as *net.TCPConn does. An orderly close is io.EOF; a reset
// matches ErrPeerClosed.
func (c *FileConn) Read(b []byte) (int, error) {
	for {
		n, err := c.f.Read(b)
		if err == nil {
			return n, nil
		}
		if err == io.EOF {
			return n, c.afterRead(err)
		}
		if c.readDeadline.expired(err, c.f.SetReadDeadline) {
			return n, c.afterRead(c.opError("read", err))
		}
	}
}

// Write writes all of b unless an error stops it. If the peer has gone away
// the error matches ErrPeerClosed.
func (c *FileConn) Write(b []byte) (int, error) {
	written := 0
	for {
		n, err := c.f.Write(b[written:])
		written += n
		if err == nil {
			return written, nil
		}
		if c.writeDeadline.expired(err, c.f.SetWriteDeadline) {
			return written, c.afterWrite(c.opError("write", err))
		}
	}
}

// ReadFrom implements io.ReaderFrom with os.File's splice path.
func (c *FileConn) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		n, err := c.f.ReadFrom(r)
		total += n
		if err == nil {
			return total, nil
		}
		if c.writeDeadline.expired(err, c.f.SetWriteDeadline) {
			return total, c.afterWrite(c.opError("readfrom", err))
		}
	}
}

// WriteTo implements io.WriterTo with os.File's splice/sendfile path.
func (c *FileConn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		n, err := c.f.WriteTo(w)
		total += n
		if err == nil {
			return total, nil
		}
		if c.readDeadline.expired(err, c.f.SetReadDeadline) {
			return total, c.afterRead(c.opError("writeto", err))
		}
	}
}

// Close closes the connection. It may be called more than once; only the
// first call counts and runs the owner's hook.
func (c *FileConn) Close() error {
	err := c.f.Close()
	c.afterClose()
	if err != nil {
		return c.opError("close", err)
	}
	return nil
}

// CloseWrite sends FIN and leaves the read side open.
func (c *FileConn) CloseWrite() error {
	rc, err := c.f.SyscallConn()
	if err == nil {
		err = rawsock.CloseWrite(rc)
	}
	if err != nil {
		return c.opError("close", err)
	}
	return nil
}

// SetLinger is *net.TCPConn's SetLinger: sec < 0 is the default, 0 makes
// Close send RST.
func (c *FileConn) SetLinger(sec int) error {
	rc, err := c.f.SyscallConn()
	if err == nil {
		err = rawsock.SetLinger(rc, sec)
	}
	if err != nil {
		return c.opError("set", err)
	}
	return nil
}

// LocalAddr is the local address, a *net.TCPAddr. When the dialer did not
// know the port (the kernel chose it at connect), the first call asks the
// kernel (getsockname) and the answer is kept.
func (c *FileConn) LocalAddr() net.Addr {
	if la := c.laddr.Load(); la != nil {
		return la
	}
	rc, err := c.f.SyscallConn()
	if err != nil {
		return &net.TCPAddr{}
	}
	la, err := rawsock.LocalAddr(rc)
	if err != nil {
		return &net.TCPAddr{}
	}
	c.laddr.Store(la)
	return la
}

// RemoteAddr is the address dialed, a *net.TCPAddr.
func (c *FileConn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline implements net.Conn.
func (c *FileConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline implements net.Conn; later deadlines are applied lazily,
// as Conn's are.
func (c *FileConn) SetReadDeadline(t time.Time) error {
	if err := c.readDeadline.set(t, c.f.SetReadDeadline); err != nil {
		return c.opError("set", err)
	}
	return nil
}

// SetWriteDeadline implements net.Conn; see SetReadDeadline.
func (c *FileConn) SetWriteDeadline(t time.Time) error {
	if err := c.writeDeadline.set(t, c.f.SetWriteDeadline); err != nil {
		return c.opError("set", err)
	}
	return nil
}

// SyscallConn gives access to the socket.
func (c *FileConn) SyscallConn() (syscall.RawConn, error) { return c.f.SyscallConn() }
