// Package tcpconn is the connection type connopt hands out, from the
// listener (Conn, over a *net.TCPConn) and from the dialer (FileConn, over
// an *os.File holding a socket the dialer connected itself): both learn that
// the peer went away from the error of the I/O they were doing anyway, never
// from a probe, and both tell their owner on Close whether the peer had
// closed first. The bookkeeping is one shared type, state.
package tcpconn

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrPeerClosed matches (with errors.Is) the error of a Read or Write on a
// connection whose peer has gone away: EPIPE or ECONNRESET.
var ErrPeerClosed = errors.New("connopt: peer closed the connection")

// Counters are shared by all connections of one listener or dialer.
type Counters struct {
	Active          atomic.Int64
	PeerClosedRead  atomic.Uint64
	PeerClosedWrite atomic.Uint64
}

// state is what both connection types keep beside their descriptor.
type state struct {
	counters *Counters
	onClose  func(peerClosed bool)
	closed   atomic.Bool
	// peerGone is set once a read saw EOF or a reset, or a write saw EPIPE
	// or a reset: the peer closed first, so this side will not sit in
	// TIME_WAIT.
	peerGone atomic.Bool

	readDeadline, writeDeadline lazyDeadline
}

func (s *state) init(counters *Counters, onClose func(bool)) {
	s.counters, s.onClose = counters, onClose
	counters.Active.Add(1)
}

// afterRead classifies a read error: io.EOF stays io.EOF, a reset matches
// ErrPeerClosed.
func (s *state) afterRead(err error) error {
	if err == io.EOF {
		s.peerGone.Store(true)
		return err
	}
	return s.peerClosed(err, &s.counters.PeerClosedRead)
}

func (s *state) afterWrite(err error) error {
	return s.peerClosed(err, &s.counters.PeerClosedWrite)
}

// afterClose runs the first time the connection is closed.
func (s *state) afterClose() {
	if s.closed.CompareAndSwap(false, true) {
		s.counters.Active.Add(-1)
		if s.onClose != nil {
			s.onClose(s.peerGone.Load())
		}
	}
}

// peerClosed rewrites the error of a failed operation so that it also
// matches ErrPeerClosed when the peer is gone, and counts it. Only that path
// allocates.
func (s *state) peerClosed(err error, counter *atomic.Uint64) error {
	if !IsPeerClosed(err) {
		return err
	}
	s.peerGone.Store(true)
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

// Conn is a *net.TCPConn (embedded, so SyscallConn, CloseWrite, SetLinger,
// deadlines and addresses are the standard library's) with the shared state.
// Nothing is added to a successful Read or Write.
//
// ReadFrom is forwarded, so io.Copy from an *os.File still uses sendfile.
// One thing a wrapper cannot keep: fasthttp sends a response larger than its
// write buffer with a single writev only when the connection's dynamic type
// is *net.TCPConn; through Conn such a response takes two writes.
type Conn struct {
	*net.TCPConn
	state
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
	c := &Conn{TCPConn: tc}
	c.init(counters, onClose)
	return c
}

// Read reads from the connection. A reset from the peer matches
// ErrPeerClosed; an orderly close is io.EOF as usual.
func (c *Conn) Read(b []byte) (int, error) {
	for {
		n, err := c.TCPConn.Read(b)
		if err == nil {
			return n, nil
		}
		if c.readDeadline.expired(err, c.TCPConn.SetReadDeadline) {
			return n, c.afterRead(err)
		}
		// A deadline the caller has since moved later fired: go on.
	}
}

// Write writes to the connection. If the peer has gone away the error
// matches ErrPeerClosed.
func (c *Conn) Write(b []byte) (int, error) {
	written := 0
	for {
		n, err := c.TCPConn.Write(b[written:])
		written += n
		if err == nil {
			return written, nil
		}
		if c.writeDeadline.expired(err, c.TCPConn.SetWriteDeadline) {
			return written, c.afterWrite(err)
		}
	}
}

// ReadFrom implements io.ReaderFrom with the standard library's sendfile and
// splice paths.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		n, err := c.TCPConn.ReadFrom(r)
		total += n
		if err == nil {
			return total, nil
		}
		if c.writeDeadline.expired(err, c.TCPConn.SetWriteDeadline) {
			return total, c.afterWrite(err)
		}
	}
}

// SetDeadline sets both deadlines; see SetReadDeadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline with net.Conn's meaning. A deadline
// later than the one in force reaches the runtime's timer only if the
// earlier one fires first (see lazyDeadline), which makes the per-request
// updates of fasthttp's timeouts nearly free.
func (c *Conn) SetReadDeadline(t time.Time) error {
	return c.readDeadline.set(t, c.TCPConn.SetReadDeadline)
}

// SetWriteDeadline sets the write deadline; see SetReadDeadline.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return c.writeDeadline.set(t, c.TCPConn.SetWriteDeadline)
}

// Close closes the connection. It may be called more than once; only the
// first call counts and runs the owner's hook.
func (c *Conn) Close() error {
	err := c.TCPConn.Close()
	c.afterClose()
	return err
}
