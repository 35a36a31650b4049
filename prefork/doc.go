// Package prefork serves one address from several processes of the same
// binary, on listening sockets the parent owns, and hands over to a new
// binary without losing a connection.
//
// The parent (a Supervisor) opens Children listening sockets on the
// address with SO_REUSEPORT and connopt's listener options, and starts as
// many copies of its own executable, with its arguments and environment;
// each child gets one socket as an inherited descriptor (Listener, or Serve
// for the whole program). A child that dies is started again on the same
// socket; connections the kernel queued on it meanwhile wait there instead
// of being reset, because the parent still holds it.
//
// Upgrade (SIGHUP to the parent) starts a new generation from the file at
// the executable's path, waits until every new child accepts, then sends
// SIGTERM to the old ones. Old and new children share the sockets, so a
// connection in an accept queue is accepted by one of them, never reset;
// closing an old child's descriptor does not close the socket. A server
// built with package server drains its keep-alive connections as it stops
// (each gets one more response, with Connection: close), so clients see
// no reset either, and so does ServeFasthttp for a plain fasthttp server.
// fasthttp's own Shutdown, which Fiber users reach through Serve, closes
// idle keep-alive connections at once: a client that sends on one at that
// moment fails or retries (fasthttp's client does for idempotent
// requests).
//
// Both generations run during a hand-over: anything else a child binds on
// a fixed port must let the next generation bind it too (SO_REUSEPORT), or
// the new child fails to start and the hand-over is abandoned.
//
// fasthttp's prefork package and Fiber's Prefork option each open their
// own listeners and cannot take connopt's; this package replaces them for
// both (see the README).
//
// The supervisor's own code does not change on Upgrade: it is this
// package, and only a full restart replaces it. Linux is the real
// implementation: elsewhere children share the parent's process group and
// are not stopped by the kernel if the parent dies.
package prefork
