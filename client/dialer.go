package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/connopt/connopt/internal/confcheck"
	"github.com/connopt/connopt/internal/nsexec"
	"github.com/connopt/connopt/internal/rawsock"
	"github.com/connopt/connopt/internal/tcpconn"
	"github.com/connopt/connopt/ports"
	"github.com/connopt/connopt/sockopt"
	"github.com/connopt/connopt/sockpool"
)

// Defaults applied to a zero Config.
const (
	// DefaultConnectTimeout bounds Dial (fasthttp's DefaultDialTimeout).
	DefaultConnectTimeout = 3 * time.Second
	// DefaultDNSCacheTTL is how long a resolved name is reused.
	DefaultDNSCacheTTL = time.Minute
	// DefaultMaxIdleConnDuration is the MaxIdleConnDuration of the
	// fasthttp clients built here: a pooled connection idle this long is
	// closed by the client. It is below the shortest keep-alive timeout of
	// common upstreams (Node.js and Apache httpd close after 5 s; nginx
	// after 75 s, cloud load balancers after 60 s or more), so the client
	// closes first and never sends on a connection the upstream is
	// closing; fasthttp's own default, 10 s, is above Node's and Apache's.
	// An upstream with a shorter timeout is covered by the peer watch
	// (the closed connection is seen before it is used).
	DefaultMaxIdleConnDuration = 4 * time.Second
)

var (
	// ErrPeerClosed matches the error of a Read or Write on a connection
	// whose peer has gone away (EPIPE, ECONNRESET).
	ErrPeerClosed = tcpconn.ErrPeerClosed
	// ErrUnsent matches, besides ErrPeerClosed, the error of a Write on a
	// dialed connection whose upstream had already closed it (its FIN or
	// RST was seen): nothing was sent since the last read, so the request
	// may be sent again elsewhere, whatever its method.
	ErrUnsent = tcpconn.ErrUnsent
	// ErrUnsupported is returned by NewDialer outside Linux. It is
	// sockopt.ErrUnsupported.
	ErrUnsupported = sockopt.ErrUnsupported
	// ErrNameInNamespace is returned for a host name when the Dialer works
	// in another namespace: resolving it here would ask the host's
	// resolver, not the namespace's.
	ErrNameInNamespace = errors.New("client: host names are not resolved for another network namespace; dial an IP address")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("client: dialer closed")
	// ErrInvalidConfig is matched by the error NewDialer returns for a
	// Config value that has no meaning, such as a negative timeout or size.
	// It is sockopt.ErrInvalidConfig.
	ErrInvalidConfig = sockopt.ErrInvalidConfig
)

// Conn is the connection a Dialer returns (as a net.Conn): a dialed TCP
// socket with *net.TCPConn's methods (Read, Write, ReadFrom, WriteTo,
// deadlines, CloseWrite, SetLinger, SyscallConn, *net.TCPAddr addresses)
// and their meaning, whose errors match ErrPeerClosed when the peer has
// gone away, and whose Close releases its port lease.
type Conn = tcpconn.FileConn

// Config configures a Dialer. The zero value dials from the current
// namespace, lets the kernel pick source address and port, and times out
// after DefaultConnectTimeout.
type Config struct {
	// Namespace is "" for the namespace of the thread calling NewDialer, a
	// name (/run/netns/NAME) or a path (/proc/PID/ns/net).
	Namespace string
	// Ports, if set, leases the source address and port of every
	// connection; its sources are used and Sources is ignored.
	Ports *ports.Allocator
	// Sources are local addresses to spread connections over when Ports is
	// nil: bound with IP_BIND_ADDRESS_NO_PORT, so the kernel still picks
	// the port per 4-tuple at connect.
	Sources []netip.Addr
	// ConnectTimeout bounds a dial whose context has no deadline. Zero
	// means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// PoolSize is the number of sockets kept ready per address family
	// for a dialer into another namespace. Zero means sockpool.DefaultSize.
	// Dialers in the process's own namespace keep no pool.
	PoolSize int
	// DNSCacheTTL is how long a resolved host name is reused. Zero means
	// DefaultDNSCacheTTL.
	DNSCacheTTL time.Duration

	// Options are set where the socket is made: by the dialing goroutine
	// in the process's namespace (only those that differ from the
	// kernel's defaults), or by the pool's thread for another namespace.
	sockopt.Options

	// DisablePeerWatch turns off watching dialed connections for the
	// upstream's FIN or RST. With the watch (the default), a Write on a
	// connection whose upstream has closed it fails at once without
	// sending anything (ErrUnsent), and the fasthttp clients built here
	// send such a request on another connection, whatever its method. It
	// costs one epoll_ctl per dial, and a wake-up of the watcher's
	// goroutine (one epoll_wait) for each connection the upstream closes
	// while it is open. Turn it off for protocols in which the upstream
	// half-closes and still reads.
	DisablePeerWatch bool
}

// Dialer dials TCP connections. In the process's namespace the dialing
// goroutine makes each socket itself, as net.Dialer does; into another
// namespace it takes one from a socket pool whose thread lives there,
// shared with every other Dialer of the process into that namespace with
// the same family, options and PoolSize. It is safe for concurrent use;
// a dial takes no lock of the Dialer's (a ports lease takes its
// allocator's).
type Dialer struct {
	cfg     Config
	timeout time.Duration
	ports   *ports.Allocator
	srcs4   []netip.Addr
	srcs6   []netip.Addr
	rr      atomic.Uint32

	// inline: sockets are made by the dialing goroutine, with opts.
	inline bool
	opts   rawsock.Options
	// Otherwise from pools, by family (0 IPv4, 1 IPv6), made from
	// poolCfg on first use and replaced when their namespace dies;
	// private pools are the Dialer's own (see newPrivatePool).
	pools   [2]atomic.Pointer[sharedPool]
	poolCfg [2]sockpool.Config
	private bool
	v6err   error // why a private Dialer has no IPv6 pool
	closed  atomic.Bool

	dns dnsCache

	conns        tcpconn.Counters
	watch        *watcher // nil with DisablePeerWatch
	redirected   atomic.Uint64
	writeRetries atomic.Uint64
	dials        atomic.Uint64
	dialErrors   [numReasons]atomic.Uint64
	deadRetries  atomic.Uint64
	connectTime  prometheus.Histogram
}

// NewDialer returns a Dialer. Into another namespace, its IPv4 socket pool
// is made (or joined) at once, so a missing namespace is reported here.
func NewDialer(cfg Config) (*Dialer, error) {
	if err := cfg.Options.Validate(); err != nil {
		return nil, err
	}
	if err := confcheck.NonNegative(
		confcheck.Duration("ConnectTimeout", cfg.ConnectTimeout), confcheck.Int("PoolSize", cfg.PoolSize),
		confcheck.Duration("DNSCacheTTL", cfg.DNSCacheTTL),
	); err != nil {
		return nil, err
	}
	d := &Dialer{
		cfg:     cfg,
		timeout: cfg.ConnectTimeout,
		ports:   cfg.Ports,
		connectTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "connopt_client_connect_seconds",
			Help:    "Time from the start of a dial to an established connection.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 16),
		}),
	}
	if d.timeout <= 0 {
		d.timeout = DefaultConnectTimeout
	}
	d.dns.ttl = cfg.DNSCacheTTL
	if d.dns.ttl <= 0 {
		d.dns.ttl = DefaultDNSCacheTTL
	}
	if d.ports == nil {
		for _, s := range cfg.Sources {
			switch {
			case !s.IsValid():
				return nil, confcheck.Invalid("invalid address in Sources")
			case s.Unmap().Is4():
				d.srcs4 = append(d.srcs4, s.Unmap())
			default:
				d.srcs6 = append(d.srcs6, s)
			}
		}
	}
	if err := d.prepare(); err != nil {
		d.Close()
		return nil, fmt.Errorf("client: %w", err)
	}
	if !cfg.DisablePeerWatch {
		w, err := newWatcher()
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("client: %w", err)
		}
		d.watch = w
	}
	return d, nil
}

// prepare decides where sockets are made. In the process's namespace (the
// Config names none and the calling thread is there) the dialing goroutine
// makes them, and every unlocked goroutine's thread is there too. Anywhere
// else a pool's thread does: the IPv4 pool is joined now; the IPv6 one on
// first use, or now too when the namespace is this thread's own, which a
// later caller's thread may not be in.
func (d *Dialer) prepare() error {
	bind := rawsock.BindOptions{NoPort: len(d.srcs4)+len(d.srcs6) > 0}
	if d.ports != nil {
		// Set once at creation, so BindPrepared only binds.
		o := d.ports.SocketOptions()
		bind = rawsock.BindOptions{ReuseAddr: o.ReuseAddr, NoPort: o.BindAddressNoPort, RangeLow: o.LocalPortRange.Low, RangeHigh: o.LocalPortRange.High}
	}
	if d.cfg.Namespace == "" {
		if here, err := nsexec.InProcessNamespace(); err == nil && here {
			d.inline = true
			d.opts = rawsock.DialOptions(d.cfg.Options, bind)
			if kernel, err := rawsock.KernelKeepAlive(); err == nil {
				d.opts = d.opts.WithoutKernelDefaults(kernel)
			}
			return nil
		}
		d.private = true
	}
	for i := range d.poolCfg {
		d.poolCfg[i] = sockpool.Config{
			Namespace: d.cfg.Namespace, IPv6: i == 1, Size: d.cfg.PoolSize, Options: d.cfg.Options,
			ReuseAddr: bind.ReuseAddr, BindAddressNoPort: bind.NoPort, LocalPortLow: bind.RangeLow, LocalPortHigh: bind.RangeHigh,
		}
	}
	if _, err := d.attach(0, nil); err != nil {
		return err
	}
	if d.private {
		// Later, the caller may be on another thread: the IPv6 pool
		// is made now or never (IPv6 may be off in that namespace).
		if _, err := d.attach(1, nil); err != nil {
			d.v6err = err
		}
	}
	return nil
}

// attach gives family i a pool in place of old (nil: none yet), unless
// another dial already did, and returns the pool to use.
func (d *Dialer) attach(i int, old *sharedPool) (*sharedPool, error) {
	var sp *sharedPool
	var err error
	if d.private {
		if old != nil {
			return old, nil // a thread's namespace cannot die under it
		}
		sp, err = newPrivatePool(d.poolCfg[i])
	} else {
		sp, err = acquirePool(d.poolCfg[i])
	}
	if err != nil {
		return nil, err // a cause: DialContext and NewDialer say whose
	}
	if !d.pools[i].CompareAndSwap(old, sp) {
		releasePool(sp)
		if cur := d.pools[i].Load(); cur != nil {
			return cur, nil
		}
		return nil, ErrClosed
	}
	if old != nil {
		releasePool(old)
	}
	if d.closed.Load() {
		// Close ran meanwhile and may have missed this one.
		if sp := d.pools[i].Swap(nil); sp != nil {
			releasePool(sp)
		}
		return nil, ErrClosed
	}
	return sp, nil
}

// socket returns a new unconnected socket for a dial: made here, or taken
// from the family's pool.
func (d *Dialer) socket(ctx context.Context, ipv6 bool) (int, error) {
	if d.closed.Load() {
		return -1, ErrClosed
	}
	if d.inline {
		return rawsock.NewTCPSocket(ipv6, d.opts)
	}
	i := 0
	if ipv6 {
		i = 1
	}
	sp := d.pools[i].Load()
	for attempt := 0; ; attempt++ {
		if sp == nil {
			if d.private {
				if i == 1 && d.v6err != nil {
					return -1, d.v6err
				}
				return -1, ErrClosed
			}
			var err error
			if sp, err = d.attach(i, nil); err != nil {
				return -1, err
			}
		}
		s, err := sp.pool.Get(ctx)
		switch {
		case err == nil:
			return s.Detach()
		case attempt == 0 && namespaceDied(err):
			// The namespace was deleted or replaced: start over with
			// whatever the name leads to now (or fail, clearly, if
			// nothing).
			if sp, err = d.attach(i, sp); err != nil {
				return -1, err
			}
		case errors.Is(err, sockpool.ErrClosed) && d.closed.Load():
			return -1, ErrClosed
		default:
			return -1, err
		}
	}
}

// Close releases the socket pools. Connections already made stay open.
func (d *Dialer) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	for i := range d.pools {
		if sp := d.pools[i].Swap(nil); sp != nil {
			releasePool(sp)
		}
	}
	if d.watch != nil {
		d.watch.close()
	}
	return nil
}

// Dial connects to addr ("ip:port", or "host:port" in the current
// namespace) within the connect timeout. It is a fasthttp.DialFunc.
func (d *Dialer) Dial(addr string) (net.Conn, error) {
	return d.DialTimeout(addr, d.timeout)
}

// DialTimeout is Dial with a timeout; zero or less means the connect
// timeout (fasthttp passes 0 for requests without a deadline). It is a
// fasthttp.DialFuncWithTimeout.
func (d *Dialer) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = d.timeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return d.DialContext(ctx, "tcp", addr)
}

// DefaultFallbackDelay is how long a dial to a name with both IPv4 and
// IPv6 addresses waits on the first family before it starts the other in
// parallel (RFC 8305 Happy Eyeballs; net.Dialer's default).
const DefaultFallbackDelay = 300 * time.Millisecond

// DialContext connects to addr over network ("tcp", "tcp4" or "tcp6"). If
// ctx has no deadline, the connect timeout applies. A host name's
// addresses are tried in turn within the one dial, as net.Dialer and
// fasthttp do, and when it has both families they race as net.Dialer's
// Happy Eyeballs does; an address that failed is tried last for a while.
// Errors are *net.OpError, as net.Dialer's: a cancelled context matches
// context.Canceled, a dial timeout context.DeadlineExceeded.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.dials.Add(1)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.timeout)
		defer cancel()
	}
	remotes, err := d.resolve(ctx, network, addr)
	if err != nil {
		d.countError(err)
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	start := time.Now()
	c, remote, err := d.dialParallel(ctx, network, remotes, len(remotes) > 1)
	if err != nil {
		d.countError(err)
		return nil, &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(remote), Err: err}
	}
	d.connectTime.Observe(time.Since(start).Seconds())
	return c, nil
}

// dialParallel races the addresses of the first address's family against
// the others, the second group starting after DefaultFallbackDelay or as
// soon as the first fails (net's dialParallel). It returns the winning
// connection, or the first group's first error and the address it came
// from.
func (d *Dialer) dialParallel(ctx context.Context, network string, remotes []netip.AddrPort, remember bool) (*tcpconn.FileConn, netip.AddrPort, error) {
	var primaries, fallbacks []netip.AddrPort
	for _, r := range remotes {
		if r.Addr().Is4() == remotes[0].Addr().Is4() {
			primaries = append(primaries, r)
		} else {
			fallbacks = append(fallbacks, r)
		}
	}
	if len(fallbacks) == 0 {
		return d.dialSerial(ctx, network, primaries, remember)
	}

	type result struct {
		c       *tcpconn.FileConn
		remote  netip.AddrPort
		err     error
		primary bool
	}
	returned := make(chan struct{})
	defer close(returned)
	results := make(chan result) // unbuffered: a late winner is closed, not leaked
	race := func(ctx context.Context, primary bool) {
		group := primaries
		if !primary {
			group = fallbacks
		}
		c, r, err := d.dialSerial(ctx, network, group, remember)
		select {
		case results <- result{c, r, err, primary}:
		case <-returned:
			if c != nil {
				c.Close()
			}
		}
	}
	primaryCtx, primaryCancel := context.WithCancel(ctx)
	defer primaryCancel()
	go race(primaryCtx, true)
	fallbackTimer := time.NewTimer(DefaultFallbackDelay)
	defer fallbackTimer.Stop()
	fallbackCtx, fallbackCancel := context.WithCancel(ctx)
	defer fallbackCancel()

	var primary, fallback result
	for {
		select {
		case <-fallbackTimer.C:
			go race(fallbackCtx, false)
		case res := <-results:
			if res.err == nil {
				return res.c, res.remote, nil
			}
			if res.primary {
				primary = res
			} else {
				fallback = res
			}
			if primary.err != nil && fallback.err != nil {
				return nil, primary.remote, primary.err
			}
			if res.primary && fallbackTimer.Stop() {
				// The primaries failed before the delay: start the
				// fallbacks now.
				fallbackTimer.Reset(0)
			}
		}
	}
}

// dialSerial tries remotes in order, giving each a share of the time left
// (net's partialDeadline), and returns the first connection or the first
// error.
func (d *Dialer) dialSerial(ctx context.Context, network string, remotes []netip.AddrPort, remember bool) (*tcpconn.FileConn, netip.AddrPort, error) {
	var firstErr error
	var firstRemote netip.AddrPort
	for i, remote := range remotes {
		if err := ctx.Err(); err != nil {
			if firstErr == nil {
				firstErr, firstRemote = mapCtxErr(err), remote
			}
			break
		}
		dctx := ctx
		if deadline, ok := ctx.Deadline(); ok && len(remotes)-i > 1 {
			if pd := partialDeadline(time.Now(), deadline, len(remotes)-i); pd.Before(deadline) {
				var cancel context.CancelFunc
				dctx, cancel = context.WithDeadline(ctx, pd)
				defer cancel()
			}
		}
		c, err := d.dialOne(dctx, network, remote)
		if remember && (err == nil || ctx.Err() == nil && addressFailed(err)) {
			d.dns.result(remote.Addr(), err)
		}
		if err == nil {
			return c, remote, nil
		}
		if firstErr == nil {
			firstErr, firstRemote = mapCtxErr(err), remote
		}
	}
	return nil, firstRemote, firstErr
}

// addressFailed says whether a dial error is the address's fault (worth
// trying it last next time) rather than the dialer's or the caller's.
func addressFailed(err error) bool {
	switch classify(err) {
	case reasonRefused, reasonTimeout, reasonUnreachable:
		return true
	}
	return false
}

// partialDeadline is net's: the time each of the remaining addresses gets,
// at least two seconds unless less is left.
func partialDeadline(now, deadline time.Time, addrsRemaining int) time.Time {
	timeRemaining := deadline.Sub(now)
	timeout := timeRemaining / time.Duration(addrsRemaining)
	const saneMinimum = 2 * time.Second
	if timeout < saneMinimum {
		if timeRemaining < saneMinimum {
			timeout = timeRemaining
		} else {
			timeout = saneMinimum
		}
	}
	return now.Add(timeout)
}

// dialOne connects to one address, through the port allocator if there is
// one. An already-cancelled or expired ctx fails before anything is taken
// from the pool, as net.Dialer fails.
func (d *Dialer) dialOne(ctx context.Context, network string, remote netip.AddrPort) (*tcpconn.FileConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	raddr := net.TCPAddrFromAddrPort(remote)
	if d.ports == nil {
		return d.connect(ctx, network, remote, raddr, nil, d.source(remote.Addr()))
	}
	var c *tcpconn.FileConn
	_, err := d.ports.Connect(remote, func(l *ports.Lease) error {
		fc, err := d.connect(ctx, network, remote, raddr, l, netip.Addr{})
		if err == nil {
			c = fc
		}
		return err
	})
	return c, err
}

// mapCtxErr gives context errors the shape net.Dialer gives them:
// "operation was canceled" matching context.Canceled, "i/o timeout"
// matching context.DeadlineExceeded.
func mapCtxErr(err error) error {
	switch err {
	case context.Canceled:
		return errCanceled
	case context.DeadlineExceeded:
		return errTimeout
	}
	return err
}

var (
	errCanceled = canceledError{}
	errTimeout  = timeoutError{}
)

type canceledError struct{}

func (canceledError) Error() string        { return "operation was canceled" }
func (canceledError) Is(target error) bool { return target == context.Canceled }

type timeoutError struct{}

func (timeoutError) Error() string        { return "i/o timeout" }
func (timeoutError) Timeout() bool        { return true }
func (timeoutError) Temporary() bool      { return true }
func (timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

func (d *Dialer) source(ip netip.Addr) netip.Addr {
	srcs := d.srcs4
	if ip.Is6() {
		srcs = d.srcs6
	}
	if len(srcs) == 0 {
		return netip.Addr{}
	}
	return srcs[int(d.rr.Add(1))%len(srcs)]
}

// connect is the hot path: a socket, a bind if a source is chosen,
// and the connect on the poller.
func (d *Dialer) connect(ctx context.Context, network string, remote netip.AddrPort, raddr *net.TCPAddr, l *ports.Lease, src netip.Addr) (*tcpconn.FileConn, error) {
	fd, err := d.socket(ctx, remote.Addr().Is6())
	if err != nil {
		return nil, err
	}
	var laddr *net.TCPAddr
	var onClose func(bool)
	switch {
	case l != nil:
		err = l.BindPrepared(fd)
		onClose = l.ReleaseAfterClose
		if ls := l.Source(); ls.Port() != 0 && !ls.Addr().IsUnspecified() {
			laddr = net.TCPAddrFromAddrPort(ls)
		}
	case src.IsValid():
		err = rawsock.BindForConnect(fd, netip.AddrPortFrom(src, 0), rawsock.BindOptions{})
	}
	if err != nil {
		rawsock.Close(fd)
		return nil, err
	}
	f, err := rawsock.Connect(ctx, fd, remote)
	if err != nil {
		return nil, err
	}
	if d.watch == nil {
		return tcpconn.NewFile(f, network, raddr, laddr, &d.conns, onClose, false), nil
	}
	var token uint64
	release := onClose
	onClose = func(peerClosed bool) {
		d.watch.remove(token)
		if release != nil {
			release(peerClosed)
		}
	}
	c := tcpconn.NewFile(f, network, raddr, laddr, &d.conns, onClose, true)
	token = d.watch.add(fd, c)
	return c, nil
}

type reason int

const (
	reasonRefused reason = iota
	reasonTimeout
	reasonCanceled
	reasonUnreachable
	reasonExhausted
	reasonNamespace
	reasonResolve
	reasonOther
	numReasons
)

var reasonNames = [numReasons]string{"refused", "timeout", "canceled", "unreachable", "ports_exhausted", "namespace", "resolve", "other"}

func classify(err error) reason {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return reasonRefused
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return reasonTimeout
	case errors.Is(err, context.Canceled):
		return reasonCanceled
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return reasonUnreachable
	case errors.Is(err, ports.ErrExhausted), errors.Is(err, ports.ErrCollisions):
		return reasonExhausted
	case errors.Is(err, sockpool.ErrNamespaceGone), errors.Is(err, sockpool.ErrNamespaceChanged), errors.Is(err, ErrNameInNamespace):
		return reasonNamespace
	case errors.As(err, &dnsErr):
		return reasonResolve
	}
	return reasonOther
}

func (d *Dialer) countError(err error) { d.dialErrors[classify(err)].Add(1) }
