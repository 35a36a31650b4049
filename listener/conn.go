package listener

import "github.com/connopt/connopt/internal/tcpconn"

// Conn is what Accept returns with Config.WrapConns: an accepted
// *net.TCPConn with active-connection and peer-closed counting and lazy
// deadlines. Every I/O path keeps net.Conn's meaning: Read, Write, ReadFrom
// (sendfile and splice kept), WriteTo and net.Buffers (one Write per
// buffer) time out at the deadline last set, never earlier or later; a
// zero deadline clears at once. Read, Write, ReadFrom and WriteTo errors
// match ErrPeerClosed when the peer has gone away. CloseWrite, CloseRead,
// SetLinger, SetNoDelay, the keep-alive setters, SyscallConn and the
// *net.TCPAddr addresses are the standard library's.
//
// Conn is not a *net.TCPConn: code that asserts that type, and fasthttp's
// single-writev path for responses larger than its write buffer, need the
// default (WrapConns off).
type Conn = tcpconn.Conn

// ErrPeerClosed matches (with errors.Is) the error of a Read or Write on a
// Conn whose peer has gone away: EPIPE or ECONNRESET. The error still
// unwraps to the syscall.Errno and keeps its *net.OpError shape and text.
var ErrPeerClosed = tcpconn.ErrPeerClosed

// IsPeerClosed reports whether err says that the peer has gone away (EPIPE
// or ECONNRESET). It works on errors from any net.Conn, so that code
// holding the default *net.TCPConn makes the same decision.
func IsPeerClosed(err error) bool { return tcpconn.IsPeerClosed(err) }
