// Package client dials upstream TCP connections in any network namespace
// and past the kernel's one-port-per-source limit, at no more cost than
// net.Dialer's: no thread locking and no setns on the dial path.
//
// In the process's own namespace a Dialer makes each socket on the dialing
// goroutine, as net.Dialer does, setting only the options that differ from
// the kernel's defaults. Into another namespace it takes an unconnected
// socket from a sockpool.Pool made there with its sockopt.Options already
// set, shared by every Dialer of the process with the same namespace,
// family, options and size. It then binds the socket to a source address
// and port from a ports.Allocator if one is configured, connects it without
// blocking and waits for the handshake on the runtime poller. The syscalls
// each path costs, and why each is kept, are in the README.
//
// Connections are *Conn values: they behave as *net.TCPConn does for reads,
// writes, deadlines and errors (*net.OpError built once, with net's texts),
// match ErrPeerClosed when the peer has gone away, and release their port
// lease on Close (at once if the peer closed first, after aging otherwise).
//
// A host name's addresses are tried in turn within one dial, the two
// families racing as in net.Dialer's Happy Eyeballs; an address that failed
// is tried last for a while.
//
// Pooled keep-alive connections are never probed before reuse. The dialer
// learns that an upstream closed one from the kernel's FIN or RST (one
// epoll instance per dialer, watched by the runtime poller): a Write on such
// a connection sends nothing and fails with ErrUnsent, and the fasthttp
// clients built here send the request on another connection, whatever its
// method. When the FIN comes after the request left, they retry when that
// is safe (idempotent requests; others only when the write itself failed).
//
// Linux only at run time: elsewhere NewDialer fails with ErrUnsupported.
package client
