// Package client dials upstream TCP connections cheaply and from inside any
// network namespace, and builds fasthttp clients on that dialer.
//
// A Dialer takes an unconnected socket from a sockpool (created in the
// target namespace with its options already set, so no thread locking, no
// setns and no setsockopt on the dial path), binds it to a source address
// and port from a ports.Allocator if one is configured, connects it without
// blocking and waits for the handshake on the runtime poller. A new
// connection costs connect, fcntl and epoll_ctl (os.NewFile) and a second
// connect that reports the outcome: four syscalls, five with a port lease,
// against net.Dialer's eleven.
//
// Connections are *tcpconn.FileConn values: they read exactly as
// *net.TCPConn does (internal/poll reads first and waits only on EAGAIN),
// shape their errors as the net package does, match ErrPeerClosed when the
// peer has gone away, and release their port lease on Close (at once if the
// peer closed first, after aging otherwise).
//
// A host name's addresses are tried in turn within one dial, the two
// families racing as in net.Dialer's Happy Eyeballs; an address that failed
// is tried last for a while.
//
// Pooled keep-alive connections are never probed before reuse: a dead one
// shows up as a failed write or read, the client's other idle connections
// are closed (after an idle gap they are likely dead too), and the fasthttp
// clients built here retry the request on a fresh connection when that is
// safe (idempotent requests; others only when the write itself failed).
//
// Linux only at run time: elsewhere NewDialer fails with
// sockpool.ErrUnsupported.
package client
