package listener

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/connopt/connopt/internal/confcheck"
	"github.com/connopt/connopt/internal/netaddr"
	"github.com/connopt/connopt/internal/tcpconn"
	"github.com/connopt/connopt/sockopt"
)

// Defaults applied to a zero Config. Keep-alive defaults are sockopt's.
const (
	// DefaultDeferAccept is how long the kernel may hold a connection whose
	// client has not sent anything yet. HTTP clients speak first, so a
	// short hold costs them nothing; a client that never speaks is accepted
	// once it expires (Linux then lets the next bare ACK through).
	DefaultDeferAccept = time.Second
	// DefaultMaxAcceptBackoff bounds the sleep between accept attempts
	// while the process (or system) is out of descriptors or memory.
	DefaultMaxAcceptBackoff = time.Second

	minAcceptBackoff = 5 * time.Millisecond
)

// ErrInvalidConfig is matched by the error Listen returns for a Config
// value that has no meaning, such as a negative duration or size. It is
// sockopt.ErrInvalidConfig.
var ErrInvalidConfig = sockopt.ErrInvalidConfig

// Config configures a Listener. The zero value is what an HTTP server wants:
// keep-alive with Go's timings, TCP_DEFER_ACCEPT of one second, the
// kernel's backlog limit and buffer autotuning. Fields follow sockopt's
// rule: zero is the default, negative is an error unless the field says it
// turns the feature off.
type Config struct {
	// Options are set once on the listening socket and inherited by every
	// accepted one (Linux copies them at accept).
	sockopt.Options

	// Backlog is the accept queue length. Zero means net.core.somaxconn,
	// the value Go's net package listens with.
	Backlog int

	// DeferAccept is TCP_DEFER_ACCEPT: a connection reaches Accept only once
	// data has arrived on it (or the time has passed). Zero means
	// DefaultDeferAccept; a negative value turns it off, which protocols
	// where the server speaks first need.
	DeferAccept time.Duration

	// FastOpenQueue, when positive, enables TCP_FASTOPEN with that many
	// pending fast-open requests. The kernel also needs the server bit
	// (2) in net.ipv4.tcp_fastopen; this package does not change sysctls.
	FastOpenQueue int

	// ReusePort sets SO_REUSEPORT so that several sockets, in this process
	// (see ListenShards) or in others, can listen on the same address and
	// the kernel spreads connections between them.
	ReusePort bool

	// MaxAcceptBackoff bounds the sleep after Accept hits EMFILE, ENFILE,
	// ENOBUFS or ENOMEM. The sleep starts at 5ms and doubles. Zero means
	// DefaultMaxAcceptBackoff.
	MaxAcceptBackoff time.Duration

	// WrapConns makes Accept return a *Conn instead of the standard
	// *net.TCPConn: it counts active connections and reads and writes that
	// found the peer gone (Metrics), and applies later deadlines lazily
	// (fasthttp's per-request deadline updates become nearly free). Off by
	// default: the options above need no wrapper, and code that asserts
	// conn.(*net.TCPConn), or fasthttp's single-writev path for large
	// responses, needs the standard type.
	WrapConns bool

	// Metrics receives the listener's counters. Nil means a new Metrics
	// for this listener; ListenShards shares one between its shards.
	Metrics *Metrics
}

func (c *Config) deferAccept() time.Duration {
	switch {
	case c.DeferAccept < 0:
		return 0
	case c.DeferAccept == 0:
		return DefaultDeferAccept
	}
	return c.DeferAccept
}

// validate rejects values that have no meaning (sockopt's rule).
func (c *Config) validate() error {
	if err := c.Options.Validate(); err != nil {
		return err
	}
	return confcheck.NonNegative(
		confcheck.Int("Backlog", c.Backlog),
		confcheck.Int("FastOpenQueue", c.FastOpenQueue),
		confcheck.Duration("MaxAcceptBackoff", c.MaxAcceptBackoff),
	)
}

// Listener is a TCP listener whose accepted connections inherit their socket
// options from the listening socket. It implements net.Listener; Accept
// returns a *net.TCPConn, or a *Conn with Config.WrapConns.
type Listener struct {
	tl         *net.TCPListener
	metrics    *Metrics
	maxBackoff time.Duration
	wrap       bool
	nagle      bool
	keepAlive  *net.KeepAliveConfig // set again on each accepted connection (FileListener)

	// The OS calls Accept makes, behind funcs so that tests can stand in
	// for them (no real EMFILE, no real sleep).
	acceptTCP func() (*net.TCPConn, error)
	sleep     func(d time.Duration, done <-chan struct{})

	closeOnce sync.Once
	closeErr  error
	done      chan struct{}
}

var _ net.Listener = (*Listener)(nil)

// Listen announces on the local address. network must be "tcp", "tcp4" or
// "tcp6"; address is as for net.Listen. Errors are *net.OpError, as
// net.Listen returns them.
func Listen(network, address string, cfg Config) (*Listener, error) {
	return ListenContext(context.Background(), network, address, cfg)
}

// ListenContext is Listen with a context for the address resolution.
func ListenContext(ctx context.Context, network, address string, cfg Config) (*Listener, error) {
	if err := netaddr.CheckNetwork(network); err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	if err := cfg.validate(); err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	tl, err := listenTCP(ctx, network, address, &cfg)
	if err != nil {
		return nil, err
	}
	return newListener(tl, &cfg), nil
}

// FileListener returns a Listener on an open listening TCP socket, such as
// one inherited from a parent process (package prefork passes them so). The
// socket keeps the options it was created with; Config's Accept-side fields
// (MaxAcceptBackoff, WrapConns, Nagle, Metrics) are used, and its
// keep-alive settings: Go's runtime turns keep-alive on with its own
// defaults on every connection accepted from a listener made from a file
// (net.FileListener offers no way to say otherwise), so Accept sets the
// configured ones again when they differ from Go's (one to four more
// setsockopt calls per connection; none with the default Options). f is
// not taken over: close it when it is no longer needed, as for
// net.FileListener. Errors are *net.OpError.
func FileListener(f *os.File, cfg Config) (*Listener, error) {
	if err := cfg.validate(); err != nil {
		return nil, &net.OpError{Op: "listen", Net: "tcp", Err: err}
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, &net.OpError{Op: "listen", Net: ln.Addr().Network(), Addr: ln.Addr(),
			Err: fmt.Errorf("%s is not a TCP listener", f.Name())}
	}
	l := newListener(tl, &cfg)
	if ka := cfg.KeepAliveConfig(); ka != runtimeKeepAlive {
		l.keepAlive = &ka
	}
	return l, nil
}

// runtimeKeepAlive is what Go's runtime sets on a connection accepted from
// a listener made by net.FileListener (sockopt's defaults are Go's).
var runtimeKeepAlive = sockopt.Options{}.KeepAliveConfig()

func newListener(tl *net.TCPListener, cfg *Config) *Listener {
	m := cfg.Metrics
	if m == nil {
		m = NewMetrics()
	}
	if cfg.WrapConns {
		m.wrapped.Store(true)
	}
	return &Listener{
		acceptTCP:  tl.AcceptTCP,
		sleep:      sleepUnlessDone,
		tl:         tl,
		metrics:    m,
		maxBackoff: cmp.Or(cfg.MaxAcceptBackoff, DefaultMaxAcceptBackoff),
		wrap:       cfg.WrapConns,
		nagle:      cfg.Nagle,
		done:       make(chan struct{}),
	}
}

// File returns a copy of the listening socket's descriptor, to pass to
// another process (FileListener takes it there). Closing either leaves the
// other open; the socket and its accept queue live while one is open.
// Unlike net.TCPListener.File, on Linux the copy leaves the socket
// non-blocking: a blocking flag would be shared with every process that
// accepts on it, and a Go process blocked in accept(2) cannot be stopped
// by closing its listener.
func (l *Listener) File() (*os.File, error) { return fileOf(l.tl) }

// ListenShards opens n listeners on the same address with SO_REUSEPORT, so
// that n Serve loops accept in parallel and the kernel spreads connections
// over them by a hash of the 4-tuple. If address has port 0, the shards
// share the port the first one was given. The shards share cfg.Metrics (a
// new Metrics if nil). On error no listener is left open.
func ListenShards(network, address string, n int, cfg Config) ([]*Listener, error) {
	if n < 1 {
		return nil, &net.OpError{Op: "listen", Net: network, Err: confcheck.Invalid("%d shards, want at least 1", n)}
	}
	c := cfg
	c.ReusePort = true
	if c.Metrics == nil {
		c.Metrics = NewMetrics()
	}
	lns := make([]*Listener, 0, n)
	for i := range n {
		ln, err := Listen(network, address, c)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listener: shard %d of %d: %w", i+1, n, err)
		}
		if i == 0 {
			// Port 0 would give every shard its own port.
			address = ln.Addr().String()
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// Accept waits for and returns the next connection: a *net.TCPConn, or a
// *Conn with Config.WrapConns. Out of descriptors or kernel memory, it
// backs off and tries again rather than failing; after Close it returns an
// error that wraps net.ErrClosed.
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		tc, err := l.acceptTCP()
		if err == nil {
			l.metrics.accepted.Add(1)
			if l.nagle {
				// The runtime set TCP_NODELAY on the accepted socket.
				tc.SetNoDelay(false)
			}
			if l.keepAlive != nil {
				tc.SetKeepAliveConfig(*l.keepAlive)
			}
			if l.wrap {
				return tcpconn.New(tc, &l.metrics.conns, nil), nil
			}
			return tc, nil
		}
		reason := classifyAcceptError(err)
		if reason == acceptErrClosed {
			return nil, err
		}
		l.metrics.acceptErrors[reason].Add(1)
		if reason == acceptErrOther {
			return nil, err
		}
		// The connection stays in the kernel's accept queue; it will be
		// accepted once a descriptor is free. Sleeping (rather than
		// returning the error) keeps fasthttp's Serve alive and keeps
		// this loop from spinning on a listen socket that stays readable.
		delay = min(max(2*delay, minAcceptBackoff), l.maxBackoff)
		l.metrics.backoffNanos.Add(uint64(delay))
		l.sleep(delay, l.done)
	}
}

// sleepUnlessDone sleeps for d or until done is closed.
func sleepUnlessDone(d time.Duration, done <-chan struct{}) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-done:
	}
}

// Close stops listening. Connections already accepted stay open. Close is
// idempotent: later calls return what the first one did.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.tl.Close()
	})
	return l.closeErr
}

// Addr returns the listener's address, a *net.TCPAddr.
func (l *Listener) Addr() net.Addr { return l.tl.Addr() }

// Metrics returns the counters this listener reports to.
func (l *Listener) Metrics() *Metrics { return l.metrics }

// SyscallConn gives access to the listening socket, for options this
// package does not cover.
func (l *Listener) SyscallConn() (syscall.RawConn, error) { return l.tl.SyscallConn() }

type acceptErrReason int

const (
	acceptErrEMFILE acceptErrReason = iota
	acceptErrENFILE
	acceptErrENOBUFS
	acceptErrENOMEM
	acceptErrOther
	numAcceptErrReasons
	acceptErrClosed // not counted: the normal end of a listener
)

var acceptErrNames = [numAcceptErrReasons]string{"emfile", "enfile", "enobufs", "enomem", "other"}

func classifyAcceptError(err error) acceptErrReason {
	switch {
	case errors.Is(err, net.ErrClosed):
		return acceptErrClosed
	case errors.Is(err, syscall.EMFILE):
		return acceptErrEMFILE
	case errors.Is(err, syscall.ENFILE):
		return acceptErrENFILE
	case errors.Is(err, syscall.ENOBUFS):
		return acceptErrENOBUFS
	case errors.Is(err, syscall.ENOMEM):
		return acceptErrENOMEM
	}
	return acceptErrOther
}
