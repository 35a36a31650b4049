// Package sockpool keeps pools of TCP sockets created inside a network
// namespace and hands them out from memory, because a socket belongs to the
// namespace of the thread that created it, and doing that per dial from Go
// (lock the thread, setns in, socket, setns back, never reuse a thread whose
// way back failed) puts thread pinning and a failure mode on the dial path.
//
// A Pool does it once: one goroutine owns a locked OS thread that enters the
// namespace when the pool starts and creates every socket of the pool,
// batch after batch, with its sockopt.Options already set. Get is a channel
// receive.
//
// The pool watches its namespace: when the name or path now leads to a
// different namespace, or to none, pooled sockets are closed and Get
// returns ErrNamespaceChanged or ErrNamespaceGone, or, with Config.Reopen,
// the pool follows the new namespace.
//
// Linux only: elsewhere New returns ErrUnsupported.
package sockpool
