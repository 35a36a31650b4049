// Package tcpconn is the connection wrapper connopt hands out where it must
// know when a connection ends: listener connections with WrapConns (Conn,
// over a *net.TCPConn), ports.DialContext (Conn) and the dialer (FileConn,
// over an *os.File holding a socket the dialer connected itself). Both
// learn that the peer went away from the error of the I/O they were doing
// anyway, never from a probe; both tell their owner on Close whether the
// peer had closed first; both keep net.Conn's deadline meaning on every
// I/O path while applying later deadlines lazily. The I/O and deadline
// logic is one shared type, state.
package tcpconn

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrPeerClosed matches (with errors.Is) the error of a Read or Write on a
// connection whose peer has gone away: EPIPE or ECONNRESET.
var ErrPeerClosed = errors.New("connopt: peer closed the connection")

// ErrUnsent matches (with errors.Is, besides ErrPeerClosed) the error of a
// Write refused because the peer had closed the connection (its FIN or RST
// was seen by a watcher, see MarkGone) before this side wrote anything
// since it last read: nothing of what the caller was sending left, so it
// may be sent again on another connection, whatever it was.
var ErrUnsent = errors.New("connopt: nothing was sent: the peer had closed the connection")

// Counters are shared by all connections of one listener or dialer.
type Counters struct {
	Active          atomic.Int64
	PeerClosedRead  atomic.Uint64
	PeerClosedWrite atomic.Uint64
}

// stream is what *net.TCPConn and *os.File have in common: the I/O paths
// state wraps.
type stream interface {
	io.Reader
	io.Writer
	io.ReaderFrom
	io.WriterTo
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// state is the I/O, deadline and close bookkeeping of both connection
// types.
type state struct {
	s stream
	// shape turns an error of s into what net would have returned; nil
	// when s is a *net.TCPConn, whose errors already are.
	shape    func(op string, err error) error
	counters *Counters
	onClose  func(peerClosed bool)
	closed   atomic.Bool
	// peerGone is set once a read saw EOF or a reset, or a write saw EPIPE
	// or a reset: the peer closed first, so this side will not sit in
	// TIME_WAIT.
	peerGone atomic.Bool

	// watched: a watcher may MarkGone this connection. Only then are gone
	// and wrote kept (two atomic operations per Write, one per Read).
	watched bool
	// gone: the watcher saw the peer's FIN or RST. Writes fail at once.
	gone atomic.Bool
	// wrote: a byte was written since the last Read that returned data,
	// so a refused Write may not be the first of a message.
	wrote atomic.Bool

	readDeadline, writeDeadline lazyDeadline
}

func (s *state) init(st stream, shape func(string, error) error, counters *Counters, onClose func(bool)) {
	s.s, s.shape, s.counters, s.onClose = st, shape, counters, onClose
	counters.Active.Add(1)
}

func (s *state) fix(op string, err error) error {
	if s.shape == nil || err == nil || err == io.EOF {
		return err
	}
	return s.shape(op, err)
}

// Read reads from the connection. A reset from the peer matches
// ErrPeerClosed; an orderly close is io.EOF as usual.
func (s *state) Read(b []byte) (int, error) {
	for {
		n, err := s.s.Read(b)
		if n > 0 && s.watched && s.wrote.Load() {
			s.wrote.Store(false)
		}
		if err == nil {
			return n, nil
		}
		if err == io.EOF {
			s.peerGone.Store(true)
			return n, err
		}
		// A timed-out read took nothing (internal/poll returns 0 with
		// the error), so it can be retried if the deadline moved.
		if n > 0 || !s.readDeadline.retry(err, s.s.SetReadDeadline) {
			return n, s.peerClosed(s.fix("read", err), &s.counters.PeerClosedRead)
		}
	}
}

// Write writes all of b unless an error stops it. If the peer has gone away
// the error matches ErrPeerClosed.
func (s *state) Write(b []byte) (int, error) {
	if s.watched {
		if s.gone.Load() {
			return 0, s.refuse("write")
		}
		if len(b) > 0 && !s.wrote.Load() {
			s.wrote.Store(true)
		}
	}
	written := 0
	for {
		n, err := s.s.Write(b[written:])
		written += n
		if err == nil {
			return written, nil
		}
		// A timed-out write reports exactly what it wrote: retrying with
		// the rest loses nothing.
		if !s.writeDeadline.retry(err, s.s.SetWriteDeadline) {
			return written, s.peerClosed(s.fix("write", err), &s.counters.PeerClosedWrite)
		}
	}
}

// ReadFrom implements io.ReaderFrom with the standard library's sendfile
// and splice paths. It runs once with the wanted write deadline on the
// descriptor; see lazyDeadline.
func (s *state) ReadFrom(r io.Reader) (int64, error) {
	if s.watched {
		if s.gone.Load() {
			return 0, s.refuse("readfrom")
		}
		s.wrote.Store(true)
	}
	return s.bulk(&s.writeDeadline, s.s.SetWriteDeadline, "readfrom", "read", &s.counters.PeerClosedWrite,
		func() (int64, error) { return s.s.ReadFrom(r) })
}

// WriteTo implements io.WriterTo with the standard library's splice path.
// It runs once with the wanted read deadline on the descriptor.
func (s *state) WriteTo(w io.Writer) (int64, error) {
	n, err := s.bulk(&s.readDeadline, s.s.SetReadDeadline, "writeto", "write", &s.counters.PeerClosedRead,
		func() (int64, error) { return s.s.WriteTo(w) })
	if err == nil {
		s.peerGone.Store(true) // WriteTo ends without error at the peer's EOF
	}
	return n, err
}

// bulk runs a copy of op once under deadline d, made exact for its
// duration. An error that came from the other end of the copy (its
// otherOp, seen from there) is returned as it is, not counted as this
// connection's peer closing.
func (s *state) bulk(d *lazyDeadline, apply func(time.Time) error, op, otherOp string, counter *atomic.Uint64, copy func() (int64, error)) (int64, error) {
	d.startBulk(apply)
	defer d.endBulk()
	n, err := copy()
	if err == nil || err == io.EOF {
		return n, err
	}
	err = s.fix(op, err)
	if !otherSide(err, otherOp) {
		err = s.peerClosed(err, counter)
	}
	return n, err
}

// otherSide reports whether an error of ReadFrom or WriteTo came from the
// other end of the copy (its read, or its write, as op says) rather than
// from this connection: the peer-closed counters are this connection's.
func otherSide(err error, op string) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && (oe.Op == "readfrom" || oe.Op == "writeto") {
		err = oe.Err
	}
	return errors.As(err, &oe) && oe.Op == op
}

// SetDeadline sets both deadlines; see SetReadDeadline.
func (s *state) SetDeadline(t time.Time) error {
	if err := s.SetReadDeadline(t); err != nil {
		return err
	}
	return s.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline with net.Conn's meaning on every
// I/O path. A deadline later than the one in force reaches the runtime's
// timer only if the earlier one fires first, which makes fasthttp's
// per-request updates nearly free; an earlier or zero deadline applies at
// once.
func (s *state) SetReadDeadline(t time.Time) error {
	if s.closed.Load() {
		return s.fix(opDeadline, s.s.SetReadDeadline(t))
	}
	return s.fix(opDeadline, s.readDeadline.set(t, s.s.SetReadDeadline))
}

// SetWriteDeadline sets the write deadline; see SetReadDeadline.
func (s *state) SetWriteDeadline(t time.Time) error {
	if s.closed.Load() {
		return s.fix(opDeadline, s.s.SetWriteDeadline(t))
	}
	return s.fix(opDeadline, s.writeDeadline.set(t, s.s.SetWriteDeadline))
}

// MarkGone records that the peer closed the connection (a watcher saw its
// FIN or RST): from now on writes fail at once, sending nothing, with an
// error matching ErrPeerClosed, and ErrUnsent too when nothing had been
// written since the last read. Reads go on: data that arrived before the
// FIN is still read. It reports whether the connection was idle (nothing
// written since the last read) and whether this call made the mark.
func (s *state) MarkGone() (idle, first bool) {
	first = s.gone.CompareAndSwap(false, true)
	s.peerGone.Store(true)
	return !s.wrote.Load(), first
}

// Gone reports whether MarkGone was called.
func (s *state) Gone() bool { return s.gone.Load() }

// refuse is the error of a write on a connection marked gone: EPIPE, as a
// write would have met, shaped and counted as any peer-closed write.
func (s *state) refuse(op string) error {
	var err error = os.NewSyscallError("write", syscall.EPIPE)
	if s.shape != nil {
		err = s.shape(op, syscall.EPIPE)
	}
	err = s.peerClosed(err, &s.counters.PeerClosedWrite)
	if !s.wrote.Load() {
		if oe, ok := err.(*net.OpError); ok {
			if pe, ok := oe.Err.(*peerClosedError); ok {
				pe.unsent = true
			}
		} else if pe, ok := err.(*peerClosedError); ok {
			pe.unsent = true
		}
	}
	return err
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
// errors.Is(err, syscall.EPIPE) still holds) and adds ErrPeerClosed to it,
// and ErrUnsent when the write was refused before anything was sent.
type peerClosedError struct {
	err    error
	unsent bool
}

func (e *peerClosedError) Error() string { return e.err.Error() }
func (e *peerClosedError) Unwrap() error { return e.err }
func (e *peerClosedError) Is(target error) bool {
	return target == ErrPeerClosed || e.unsent && target == ErrUnsent
}

// Timeout and Temporary give the answers *net.OpError gives for the
// wrapped error, so net.Error callers see no difference.
func (e *peerClosedError) Timeout() bool {
	t, ok := e.err.(interface{ Timeout() bool })
	return ok && t.Timeout()
}

func (e *peerClosedError) Temporary() bool {
	var errno syscall.Errno
	return errors.As(e.err, &errno) && errno.Temporary()
}

// Conn wraps a *net.TCPConn with the shared state. It does not embed the
// *net.TCPConn: every method it has is defined here, so no I/O path reaches
// the socket without the deadline and peer-closed handling (an embedded
// *net.TCPConn would also bring net's unexported writeBuffers, through
// which net.Buffers would write past a lazily kept deadline). The cost:
// net.Buffers writes one buffer per Write, and fasthttp's single-writev
// path for large responses, which needs the dynamic type *net.TCPConn, is
// not taken. Addresses are *net.TCPAddr; ReadFrom keeps sendfile and
// splice; SyscallConn and CloseWrite are the standard library's.
type Conn struct {
	tc *net.TCPConn
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
	c := &Conn{tc: tc}
	c.init(tc, nil, counters, onClose)
	return c
}

// Close closes the connection. It may be called more than once; only the
// first call counts and runs the owner's hook.
func (c *Conn) Close() error {
	err := c.tc.Close()
	c.afterClose()
	return err
}

// CloseRead shuts down the reading side.
func (c *Conn) CloseRead() error { return c.tc.CloseRead() }

// CloseWrite shuts down the writing side (sends FIN).
func (c *Conn) CloseWrite() error { return c.tc.CloseWrite() }

// LocalAddr is the local address, a *net.TCPAddr.
func (c *Conn) LocalAddr() net.Addr { return c.tc.LocalAddr() }

// RemoteAddr is the peer's address, a *net.TCPAddr.
func (c *Conn) RemoteAddr() net.Addr { return c.tc.RemoteAddr() }

// SetKeepAlive is *net.TCPConn's.
func (c *Conn) SetKeepAlive(on bool) error { return c.tc.SetKeepAlive(on) }

// SetKeepAlivePeriod is *net.TCPConn's.
func (c *Conn) SetKeepAlivePeriod(d time.Duration) error { return c.tc.SetKeepAlivePeriod(d) }

// SetKeepAliveConfig is *net.TCPConn's.
func (c *Conn) SetKeepAliveConfig(cfg net.KeepAliveConfig) error { return c.tc.SetKeepAliveConfig(cfg) }

// SetLinger is *net.TCPConn's: sec < 0 is the default, 0 makes Close send
// RST.
func (c *Conn) SetLinger(sec int) error { return c.tc.SetLinger(sec) }

// SetNoDelay is *net.TCPConn's.
func (c *Conn) SetNoDelay(noDelay bool) error { return c.tc.SetNoDelay(noDelay) }

// SetReadBuffer is *net.TCPConn's.
func (c *Conn) SetReadBuffer(bytes int) error { return c.tc.SetReadBuffer(bytes) }

// SetWriteBuffer is *net.TCPConn's.
func (c *Conn) SetWriteBuffer(bytes int) error { return c.tc.SetWriteBuffer(bytes) }

// SyscallConn gives access to the socket.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.tc.SyscallConn() }
