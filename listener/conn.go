package listener

import "github.com/connopt/connopt/internal/tcpconn"

// Conn is an accepted connection: a *net.TCPConn (embedded as the field
// TCPConn) whose Read, Write and ReadFrom errors match ErrPeerClosed when the
// peer has gone away. It adds no syscall and no allocation to a successful
// Read or Write. ReadFrom keeps sendfile. The same type is what connopt's
// dialers return.
//
// One thing a wrapper cannot keep: fasthttp sends a response larger than its
// write buffer with a single writev only when the connection's dynamic type
// is *net.TCPConn; through Conn such a response takes two writes.
type Conn = tcpconn.Conn

// ErrPeerClosed matches (with errors.Is) the error of a Read or Write on a
// Conn whose peer has gone away: EPIPE or ECONNRESET. The error still
// unwraps to the syscall.Errno and keeps its *net.OpError shape and text.
var ErrPeerClosed = tcpconn.ErrPeerClosed

// IsPeerClosed reports whether err says that the peer has gone away (EPIPE
// or ECONNRESET). It works on errors from any net.Conn, not only Conn, so
// that code holding a plain *net.TCPConn can make the same decision.
func IsPeerClosed(err error) bool { return tcpconn.IsPeerClosed(err) }
