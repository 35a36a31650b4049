// Package sockpool keeps pools of TCP sockets created inside a network
// namespace and hands them out from memory, so that dialing into a namespace
// needs no thread locking and no setns on the dial path.
//
// A socket belongs to the network namespace of the thread that called
// socket(2). Creating one elsewhere from Go means LockOSThread, setns into
// the target, socket, setns back, and never reusing the thread if the way
// back fails: goroutines move between threads, and a thread left in the
// wrong namespace would quietly put every later socket there. A Pool does
// that once: one goroutine owns a locked OS thread that enters the
// namespace when the pool starts and creates every socket of the pool,
// batch after batch, with the configured options already set. Get is a
// channel receive.
//
// The pool watches its namespace: when the name or path now leads to a
// different namespace, or to none, pooled sockets are closed and Get
// returns ErrNamespaceChanged or ErrNamespaceGone, or, with Config.Reopen,
// the pool follows the new namespace.
//
// On kernels of today a setns pair costs about 1.2 µs and socket() 1.6 µs
// (see make bench-sockpool), so the prize is less the time than the safety
// and the absence of thread pinning on the dial path.
//
// Linux only: elsewhere New returns ErrUnsupported.
package sockpool
