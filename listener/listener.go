package listener

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/connopt/connopt/internal/confcheck"
	"github.com/connopt/connopt/internal/tcpconn"
)

// Defaults applied to a zero Config.
const (
	// DefaultDeferAccept is how long the kernel may hold a connection whose
	// client has not sent anything yet. HTTP clients speak first, so a
	// short hold costs them nothing; a client that never speaks is accepted
	// once it expires (Linux then lets the next bare ACK through).
	DefaultDeferAccept = time.Second
	// Go's own keep-alive defaults (net.KeepAliveConfig), kept so that
	// switching to this package changes no behaviour on the wire.
	DefaultKeepAliveIdle     = 15 * time.Second
	DefaultKeepAliveInterval = 15 * time.Second
	DefaultKeepAliveCount    = 9
	// DefaultMaxAcceptBackoff bounds the sleep between accept attempts
	// while the process (or system) is out of descriptors or memory.
	DefaultMaxAcceptBackoff = time.Second

	minAcceptBackoff = 5 * time.Millisecond
)

var (
	// ErrUnsupportedNetwork is returned by Listen for networks other than
	// tcp, tcp4 and tcp6.
	ErrUnsupportedNetwork = errors.New("listener: unsupported network")
	// ErrInvalidConfig is returned by Listen for a Config value that has
	// no meaning, such as a negative duration or size.
	ErrInvalidConfig = errors.New("listener: invalid Config")
)

// Config configures a Listener. The zero value (or a nil *Config) is what an
// HTTP server wants: keep-alive with Go's timings, TCP_DEFER_ACCEPT of one
// second, the kernel's backlog limit and buffer autotuning.
type Config struct {
	// Backlog is the accept queue length. Zero means net.core.somaxconn,
	// the value Go's net package listens with.
	Backlog int

	// DisableKeepAlive turns TCP keep-alive probes off. When on (the
	// default), SO_KEEPALIVE and the three timings are set once on the
	// listening socket and inherited by every accepted one.
	DisableKeepAlive bool
	// KeepAliveIdle, KeepAliveInterval and KeepAliveCount are
	// TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT; zero means the Default
	// constants. The kernel keeps whole seconds.
	KeepAliveIdle     time.Duration
	KeepAliveInterval time.Duration
	KeepAliveCount    int

	// DeferAccept is TCP_DEFER_ACCEPT: a connection reaches Accept only once
	// data has arrived on it (or the time has passed). Zero means
	// DefaultDeferAccept; a negative value turns it off, which protocols
	// where the server speaks first need.
	DeferAccept time.Duration

	// FastOpenQueue, when positive, enables TCP_FASTOPEN with that many
	// pending fast-open requests. The kernel also needs the server bit
	// (2) in net.ipv4.tcp_fastopen; this package does not change sysctls.
	FastOpenQueue int

	// ReadBuffer and WriteBuffer set SO_RCVBUF and SO_SNDBUF on the
	// listening socket, inherited by accepted sockets. Zero keeps the
	// kernel's autotuning, which is almost always better.
	ReadBuffer  int
	WriteBuffer int

	// ReusePort sets SO_REUSEPORT so that several sockets, in this process
	// (see ListenShards) or in others, can listen on the same address and
	// the kernel spreads connections between them.
	ReusePort bool

	// MaxAcceptBackoff bounds the sleep after Accept hits EMFILE, ENFILE,
	// ENOBUFS or ENOMEM. The sleep starts at 5ms and doubles. Zero means
	// DefaultMaxAcceptBackoff; negative is an error.
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

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// validate rejects values that have no meaning, by the rule of every
// connopt Config: zero means the documented default, negative is an error
// unless the field says it turns the feature off (DeferAccept).
func (c *Config) validate() error {
	return confcheck.NonNegative(ErrInvalidConfig,
		confcheck.Int("Backlog", c.Backlog),
		confcheck.Duration("KeepAliveIdle", c.KeepAliveIdle),
		confcheck.Duration("KeepAliveInterval", c.KeepAliveInterval),
		confcheck.Int("KeepAliveCount", c.KeepAliveCount),
		confcheck.Int("FastOpenQueue", c.FastOpenQueue),
		confcheck.Int("ReadBuffer", c.ReadBuffer),
		confcheck.Int("WriteBuffer", c.WriteBuffer),
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

	closeOnce sync.Once
	closeErr  error
	done      chan struct{}
}

var _ net.Listener = (*Listener)(nil)

// Listen announces on the local address. network must be "tcp", "tcp4" or
// "tcp6"; address is as for net.Listen. A nil cfg means the defaults.
func Listen(network, address string, cfg *Config) (*Listener, error) {
	return ListenContext(context.Background(), network, address, cfg)
}

// ListenContext is Listen with a context for the address resolution.
func ListenContext(ctx context.Context, network, address string, cfg *Config) (*Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, &net.OpError{Op: "listen", Net: network, Err: fmt.Errorf("%w %q", ErrUnsupportedNetwork, network)}
	}
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.validate(); err != nil {
		return nil, &net.OpError{Op: "listen", Net: network, Err: err}
	}
	tl, err := listenTCP(ctx, network, address, cfg)
	if err != nil {
		return nil, err
	}
	m := cfg.Metrics
	if m == nil {
		m = NewMetrics()
	}
	if cfg.WrapConns {
		m.wrapped.Store(true)
	}
	return &Listener{
		tl:         tl,
		metrics:    m,
		maxBackoff: orDefault(cfg.MaxAcceptBackoff, DefaultMaxAcceptBackoff),
		wrap:       cfg.WrapConns,
		done:       make(chan struct{}),
	}, nil
}

// ListenShards opens n listeners on the same address with SO_REUSEPORT, so
// that n Serve loops accept in parallel and the kernel spreads connections
// over them by a hash of the 4-tuple. If address has port 0, the shards
// share the port the first one was given. The shards share cfg.Metrics (a
// new Metrics if nil). On error no listener is left open.
func ListenShards(network, address string, n int, cfg *Config) ([]*Listener, error) {
	if n < 1 {
		return nil, &net.OpError{Op: "listen", Net: network, Err: fmt.Errorf("%w: %d shards, want at least 1", ErrInvalidConfig, n)}
	}
	c := Config{}
	if cfg != nil {
		c = *cfg
	}
	c.ReusePort = true
	if c.Metrics == nil {
		c.Metrics = NewMetrics()
	}
	lns := make([]*Listener, 0, n)
	for i := range n {
		ln, err := Listen(network, address, &c)
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
		tc, err := l.tl.AcceptTCP()
		if err == nil {
			l.metrics.accepted.Add(1)
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
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
		}
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

// TCPListener returns the underlying listener.
func (l *Listener) TCPListener() *net.TCPListener { return l.tl }

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
