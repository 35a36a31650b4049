// Package tcpconn is the connection type connopt hands out, from the
// listener and from the dialers: a *net.TCPConn that learns that its peer
// went away from the error of the I/O it was doing anyway, never from a probe.
package tcpconn

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
)

// ErrPeerClosed matches (with errors.Is) the error of a Read or Write on a
// Conn whose peer has gone away: EPIPE or ECONNRESET.
var ErrPeerClosed = errors.New("connopt: peer closed the connection")

// Counters are shared by all connections of one listener or dialer.
type Counters struct {
	Active          atomic.Int64
	PeerClosedRead  atomic.Uint64
	PeerClosedWrite atomic.Uint64
}

// Conn is a *net.TCPConn (embedded, so SyscallConn, CloseWrite, SetLinger,
// deadlines and addresses are the standard library's) with two additions
// that cost nothing on success: the errors of Read, Write and ReadFrom match
// ErrPeerClosed when the peer went away, and Close updates the counters and
// tells its owner whether the peer had closed first.
//
// ReadFrom is forwarded, so io.Copy from an *os.File still uses sendfile.
// One thing a wrapper cannot keep: fasthttp sends a response larger than its
// write buffer with a single writev only when the connection's dynamic type
// is *net.TCPConn; through Conn such a response takes two writes.
type Conn struct {
	*net.TCPConn
	counters *Counters
	onClose  func(peerClosed bool)
	closed   atomic.Bool
	// peerGone is set once a read saw EOF or a reset, or a write saw EPIPE
	// or a reset: the peer closed first, so this side will not sit in
	// TIME_WAIT.
	peerGone atomic.Bool
}

var (
	_ net.Conn                        = (*Conn)(nil)
	_ io.ReaderFrom                   = (*Conn)(nil)
	_ io.WriterTo                     = (*Conn)(nil)
	_ syscall.Conn                    = (*Conn)(nil)
	_ interface{ CloseWrite() error } = (*Conn)(nil)
)

// New wraps tc. counters must not be nil; onClose, if not nil, runs once,
// on the first Close, with whether the peer had closed first.
func New(tc *net.TCPConn, counters *Counters, onClose func(peerClosed bool)) *Conn {
	counters.Active.Add(1)
	return &Conn{TCPConn: tc, counters: counters, onClose: onClose}
}

// Read reads from the connection. A reset from the peer matches
// ErrPeerClosed; an orderly close is io.EOF as usual.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.TCPConn.Read(b)
	if err != nil {
		if err == io.EOF {
			c.peerGone.Store(true)
		} else {
			err = c.peerClosed(err, &c.counters.PeerClosedRead)
		}
	}
	return n, err
}

// Write writes to the connection. If the peer has gone away the error
// matches ErrPeerClosed.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	if err != nil {
		err = c.peerClosed(err, &c.counters.PeerClosedWrite)
	}
	return n, err
}

// ReadFrom implements io.ReaderFrom with the standard library's sendfile and
// splice paths.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	n, err := c.TCPConn.ReadFrom(r)
	if err != nil {
		err = c.peerClosed(err, &c.counters.PeerClosedWrite)
	}
	return n, err
}

// Close closes the connection. It may be called more than once; only the
// first call counts and runs the owner's hook.
func (c *Conn) Close() error {
	err := c.TCPConn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.counters.Active.Add(-1)
		if c.onClose != nil {
			c.onClose(c.peerGone.Load())
		}
	}
	return err
}

// peerClosed rewrites the error of a failed operation so that it also
// matches ErrPeerClosed when the peer is gone, and counts it. Only that path
// allocates.
func (c *Conn) peerClosed(err error, counter *atomic.Uint64) error {
	if !IsPeerClosed(err) {
		return err
	}
	c.peerGone.Store(true)
	counter.Add(1)
	if oe, ok := err.(*net.OpError); ok {
		e := *oe
		e.Err = &peerClosedError{err: oe.Err}
		return &e
	}
	return &peerClosedError{err: err}
}

// IsPeerClosed reports whether err says that the peer has gone away (EPIPE
// or ECONNRESET). It works on errors from any net.Conn.
func IsPeerClosed(err error) bool {
	return errors.Is(err, ErrPeerClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// peerClosedError keeps the original error's text and chain (so
// errors.Is(err, syscall.EPIPE) still holds) and adds ErrPeerClosed to it.
type peerClosedError struct{ err error }

func (e *peerClosedError) Error() string        { return e.err.Error() }
func (e *peerClosedError) Unwrap() error        { return e.err }
func (e *peerClosedError) Is(target error) bool { return target == ErrPeerClosed }
