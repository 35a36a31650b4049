// Package listener is a drop-in net.Listener for fasthttp.Server.Serve (and
// net/http.Server.Serve) that makes each accepted TCP connection cheaper.
//
// Go's net package sets TCP_NODELAY and four keep-alive options on every
// socket it accepts: five setsockopt calls per connection, although Linux
// copies all of them from the listening socket. This package sets the
// options once, on the listening socket (net.ListenConfig with KeepAlive -1
// and a Control hook), so an accepted socket costs accept4, epoll_ctl,
// getsockname and the one TCP_NODELAY setsockopt the runtime cannot skip.
// TCP_DEFER_ACCEPT (on by default) keeps a connection in the kernel until
// its first bytes arrive, so the server's first read finds the request
// instead of returning EAGAIN and waiting on the poller.
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
// ECONNRESET, as Puma learned to do instead of a getsockopt per request.
//
// Accept survives descriptor exhaustion: EMFILE, ENFILE, ENOBUFS and ENOMEM
// are counted and retried after a bounded, growing sleep instead of being
// returned (fasthttp's Serve treats them as permanent and stops serving).
//
// SO_REUSEPORT shards (ListenShards), TCP_FASTOPEN, SO_RCVBUF/SO_SNDBUF and
// the accept backlog are available through Config. Counters are exposed as a
// prometheus.Collector (Listener.Metrics).
//
// Linux is the real implementation. Elsewhere Listen returns a plain Go
// listener with the same Accept, Conn and metrics behaviour, and options that
// only Linux has (ReusePort, DeferAccept, FastOpenQueue, Backlog) are ignored.
package listener
