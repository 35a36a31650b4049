// Package listener is a drop-in net.Listener for fasthttp.Server.Serve (and
// net/http.Server.Serve) that sets socket options once on the listening
// socket instead of on every accepted connection, because Linux copies them
// at accept and a churning server pays for each setsockopt.
//
// Listen uses net.ListenConfig with KeepAlive -1 and a Control hook that
// applies sockopt.Options (and Config's listener options) to the listening
// socket. TCP_DEFER_ACCEPT (on by default) keeps a connection in the kernel
// until its first bytes arrive, so the server's first read finds the request
// instead of waiting on the poller. What each choice saves is measured in
// the README.
//
// Accept returns the standard *net.TCPConn: none of the above needs a
// wrapper, and code that asserts the type, or fasthttp's single-writev path,
// keeps working. Config.WrapConns hands out *Conn instead: active and
// peer-closed counters and lazy deadlines, with net.Conn's meaning kept on
// every I/O path.
//
// Nothing is probed per request. A peer that went away shows up in the error
// of the write (or read) the server was doing anyway: IsPeerClosed (or
// errors.Is(err, ErrPeerClosed) on a *Conn) recognises EPIPE and
// ECONNRESET.
//
// Accept survives descriptor exhaustion: EMFILE, ENFILE, ENOBUFS and ENOMEM
// are counted and retried after a bounded, growing sleep instead of being
// returned (fasthttp's Serve treats them as permanent and stops serving).
// Counters are a prometheus.Collector (Listener.Metrics).
//
// Linux is the real implementation. Elsewhere Listen returns a Go listener
// with the same Accept, Conn and metrics behaviour and keep-alive settings;
// options only Linux has (ReusePort, DeferAccept, FastOpenQueue, Backlog,
// buffer sizes) are ignored.
package listener
