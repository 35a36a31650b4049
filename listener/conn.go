package listener

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
)

// Conn is an accepted connection. It is a *net.TCPConn (embedded, so
// SyscallConn, CloseWrite, SetLinger, deadlines and addresses are the
// standard library's) with two additions that cost nothing on success: the
// errors of Read, Write and ReadFrom match ErrPeerClosed when the peer went
// away, and Close keeps the listener's active-connection gauge right.
//
// ReadFrom is forwarded, so io.Copy from an *os.File still uses sendfile.
// One thing a wrapper cannot keep: fasthttp sends a response larger than its
// write buffer with a single writev only when the connection's dynamic type
// is *net.TCPConn; through Conn such a response takes two writes.
type Conn struct {
	*net.TCPConn
	metrics *Metrics
	closed  atomic.Bool
}

var (
	_ net.Conn                        = (*Conn)(nil)
	_ io.ReaderFrom                   = (*Conn)(nil)
	_ io.WriterTo                     = (*Conn)(nil)
	_ syscall.Conn                    = (*Conn)(nil)
	_ interface{ CloseWrite() error } = (*Conn)(nil)
)

// Read reads from the connection. A reset from the peer matches
// ErrPeerClosed; an orderly close is io.EOF as usual.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	if err != nil && err != io.EOF {
		err = c.peerClosed(err, &c.metrics.peerClosedRead)
	}
	return n, err
}

// Write writes to the connection. If the peer has gone away the error
// matches ErrPeerClosed.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	if err != nil {
		err = c.peerClosed(err, &c.metrics.peerClosedWrite)
	}
	return n, err
}

// ReadFrom implements io.ReaderFrom with the standard library's sendfile and
// splice paths.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.TCPConn.ReadFrom(r)
	if err != nil {
		err = c.peerClosed(err, &c.metrics.peerClosedWrite)
	}
	return n, err
}

// Close closes the connection. It may be called more than once; the
// listener's active gauge counts the first call only.
func (c *Conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.metrics.active.Add(-1)
	}
	return c.TCPConn.Close()
}

// peerClosed rewrites the error of a failed operation so that it also
// matches ErrPeerClosed when the peer is gone, and counts it. Only that
// path allocates.
func (c *Conn) peerClosed(err error, counter *atomic.Uint64) error {
	if !IsPeerClosed(err) {
		return err
	}
	counter.Add(1)
	if oe, ok := err.(*net.OpError); ok {
		e := *oe
		e.Err = &peerClosedError{err: oe.Err}
		return &e
	}
	return &peerClosedError{err: err}
}

// IsPeerClosed reports whether err says that the peer has gone away (EPIPE
// or ECONNRESET). It works on errors from any net.Conn, not only Conn, so
// that code holding a plain *net.TCPConn can make the same decision.
func IsPeerClosed(err error) bool {
	return errors.Is(err, ErrPeerClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// peerClosedError keeps the original error's text and chain (so
// errors.Is(err, syscall.EPIPE) still holds) and adds ErrPeerClosed to it.
type peerClosedError struct{ err error }

func (e *peerClosedError) Error() string        { return e.err.Error() }
func (e *peerClosedError) Unwrap() error        { return e.err }
func (e *peerClosedError) Is(target error) bool { return target == ErrPeerClosed }
