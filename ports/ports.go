package ports

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/connopt/connopt/internal/confcheck"
	"github.com/connopt/connopt/internal/rawsock"
	"github.com/connopt/connopt/sockopt"
)

// Strategy is how source ports are chosen.
type Strategy int

const (
	// Tracked keeps per-destination pools in user space and binds with
	// SO_REUSEADDR to an explicit port. Works on any Linux.
	Tracked Strategy = iota
	// Kernel binds with IP_BIND_ADDRESS_NO_PORT and confines the socket
	// with IP_LOCAL_PORT_RANGE; the kernel picks a port per 4-tuple at
	// connect. Needs Linux 6.3 or later (6.8 for a fast search).
	Kernel
)

func (s Strategy) String() string {
	switch s {
	case Tracked:
		return "tracked"
	case Kernel:
		return "kernel"
	}
	return fmt.Sprintf("Strategy(%d)", int(s))
}

// Defaults applied to a zero Config.
const (
	// DefaultAging is how long a port whose connection our side closed
	// stays out of its pool. Shorter than TIME_WAIT's 60 s, as porter's:
	// with tcp_tw_reuse (Linux's default on loopback) the kernel lets a
	// new connection take over the TIME_WAIT 4-tuple, and where it does
	// not, connect fails with EADDRNOTAVAIL and Dial moves to another
	// port.
	DefaultAging = 5 * time.Second
	// DefaultAttempts is how many ports Dial tries when bind or connect
	// finds the port held by a socket outside the allocator.
	DefaultAttempts = 8
)

var (
	// ErrInvalidConfig is matched by the error New returns for a Config
	// value that has no meaning, such as a negative Attempts or an inverted
	// Range. It is sockopt.ErrInvalidConfig.
	ErrInvalidConfig = sockopt.ErrInvalidConfig
	// ErrExhausted means every source address and port for a destination
	// is leased or aging.
	ErrExhausted = errors.New("ports: port range exhausted")
	// ErrCollisions means Dial gave up after Config.Attempts ports, each
	// already held by something outside the allocator.
	ErrCollisions = errors.New("ports: every port tried was in use outside the allocator")
	// ErrUnsupported is returned by New outside Linux. It is
	// sockopt.ErrUnsupported.
	ErrUnsupported = sockopt.ErrUnsupported
	// ErrKernelUnsupported is returned by New for the Kernel strategy on a
	// kernel without IP_BIND_ADDRESS_NO_PORT or IP_LOCAL_PORT_RANGE, unless
	// Config.FallbackToTracked is set.
	ErrKernelUnsupported = errors.New("ports: kernel strategy needs IP_BIND_ADDRESS_NO_PORT and IP_LOCAL_PORT_RANGE (Linux 6.3+)")
	// ErrNoSource means the allocator has no source address of the
	// destination's family.
	ErrNoSource = errors.New("ports: no source address of the destination's family")
)

// Range is an inclusive range of ports.
type Range struct{ Low, High uint16 }

func (r Range) String() string { return fmt.Sprintf("%d-%d", r.Low, r.High) }

// Config configures an Allocator. The zero value is usable: the system's
// range, any source address, the Tracked strategy.
type Config struct {
	// Range is the ports to hand out. Zero means the network namespace's
	// net.ipv4.ip_local_port_range. Ports in ip_local_reserved_ports are
	// always left out.
	Range Range
	// Sources are the local addresses to spread connections over. Each
	// source has the whole range for each destination. Empty means the
	// unspecified address of the destination's family (the kernel picks
	// the address by route at connect).
	Sources []netip.Addr
	// Aging is how long a port whose connection our side closed waits
	// before it is handed out again (Tracked only). Zero means
	// DefaultAging; negative means no aging.
	Aging time.Duration
	// Attempts bounds the ports Dial tries when bind or connect fails with
	// EADDRINUSE or EADDRNOTAVAIL. Zero means DefaultAttempts.
	Attempts int
	// Strategy chooses Tracked (the default) or Kernel.
	Strategy Strategy
	// FallbackToTracked makes New use Tracked instead of failing when the
	// Kernel strategy is asked for and the kernel cannot do it.
	FallbackToTracked bool
}

// Allocator hands out source ports. It is safe for concurrent use.
type Allocator struct {
	strategy Strategy
	ports    []uint16 // the usable ports (Tracked), in order
	rng      Range
	sources4 []netip.Addr
	sources6 []netip.Addr
	aging    int64
	attempts int
	now      func() int64 // env.now

	seed   maphash.Seed
	shards [64]shard
	rr     atomic.Uint32

	inUse      atomic.Int64
	leases     atomic.Uint64
	exhausted  atomic.Uint64
	collisions atomic.Uint64
}

type shard struct {
	mu    sync.Mutex
	pools map[poolKey]*pool
}

type poolKey struct {
	src netip.Addr
	dst netip.AddrPort
}

// New returns an Allocator for cfg.
func New(cfg Config) (*Allocator, error) {
	if !supported {
		return nil, ErrUnsupported
	}
	return newAllocator(cfg, osEnv)
}

func newAllocator(cfg Config, e env) (*Allocator, error) {
	sys, reserved, err := e.systemRange()
	if err != nil {
		return nil, fmt.Errorf("ports: reading the system port range: %w", err)
	}
	r := cfg.Range
	if r == (Range{}) {
		r = sys
	}
	if r.Low == 0 || r.Low > r.High {
		return nil, confcheck.Invalid("range %v", r)
	}
	if err := confcheck.NonNegative(confcheck.Int("Attempts", cfg.Attempts)); err != nil {
		return nil, err
	}
	a := &Allocator{
		strategy: cfg.Strategy,
		rng:      r,
		ports:    usablePorts(r, reserved),
		aging:    int64(cfg.Aging),
		attempts: cfg.Attempts,
		now:      e.now,
		seed:     maphash.MakeSeed(),
	}
	if len(a.ports) == 0 {
		return nil, confcheck.Invalid("range %v has no port that is not reserved", r)
	}
	switch {
	case cfg.Aging == 0:
		a.aging = int64(DefaultAging)
	case cfg.Aging < 0:
		a.aging = 0
	}
	if a.attempts == 0 {
		a.attempts = DefaultAttempts
	}
	for _, s := range cfg.Sources {
		switch {
		case !s.IsValid():
			return nil, confcheck.Invalid("invalid address in Sources")
		case s.Unmap().Is4():
			a.sources4 = append(a.sources4, s.Unmap())
		default:
			a.sources6 = append(a.sources6, s)
		}
	}
	switch cfg.Strategy {
	case Tracked:
	case Kernel:
		if err := rawsock.ProbeKernelPortSelection(false); err != nil {
			if !cfg.FallbackToTracked {
				return nil, fmt.Errorf("%w: %w", ErrKernelUnsupported, err)
			}
			a.strategy = Tracked
		}
	default:
		return nil, confcheck.Invalid("unknown strategy %v", cfg.Strategy)
	}
	for i := range a.shards {
		a.shards[i].pools = make(map[poolKey]*pool)
	}
	return a, nil
}

// Strategy reports the strategy in use (Tracked after a fallback).
func (a *Allocator) Strategy() Strategy { return a.strategy }

// Range reports the configured range.
func (a *Allocator) Range() Range { return a.rng }

func (a *Allocator) sources(remote netip.Addr) []netip.Addr {
	if remote.Unmap().Is4() {
		return a.sources4
	}
	return a.sources6
}

func (a *Allocator) hasSources() bool { return len(a.sources4)+len(a.sources6) > 0 }

// Acquire leases a source address and port for a connection to remote. Under
// the Kernel strategy the port is 0: connect picks it. The caller must
// Release the lease when the connection ends (or fails).
func (a *Allocator) Acquire(remote netip.AddrPort) (*Lease, error) {
	return a.acquire(remote, a.nextSource())
}

// nextSource is where the walk over the source addresses starts: one step
// further per Acquire or Connect, so sources share the load.
func (a *Allocator) nextSource() int { return int(a.rr.Add(1) & (1<<31 - 1)) }

// acquire starts with the source after skip others, for Dial's walk over
// sources under the Kernel strategy.
// acquire leases from the sources of remote, starting the walk at index
// first (modulo their number).
func (a *Allocator) acquire(remote netip.AddrPort, first int) (*Lease, error) {
	if !remote.IsValid() || remote.Port() == 0 {
		return nil, &net.AddrError{Err: "invalid remote address", Addr: remote.String()}
	}
	if remote.Addr().Is4In6() {
		remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	}
	srcs := a.sources(remote.Addr())
	if len(srcs) == 0 {
		if a.hasSources() {
			return nil, fmt.Errorf("%w: %v", ErrNoSource, remote)
		}
		any := netip.IPv4Unspecified()
		if remote.Addr().Is6() {
			any = netip.IPv6Unspecified()
		}
		srcs = []netip.Addr{any}
	}
	if a.strategy == Kernel {
		l := &Lease{a: a, key: poolKey{srcs[first%len(srcs)], remote}}
		a.inUse.Add(1)
		a.leases.Add(1)
		return l, nil
	}
	now := a.now()
	for i := range srcs {
		key := poolKey{srcs[(first+i)%len(srcs)], remote}
		sh := &a.shards[maphash.Comparable(a.seed, key)%uint64(len(a.shards))]
		sh.mu.Lock()
		p := sh.pools[key]
		if p == nil {
			p = &pool{start: rand.IntN(len(a.ports))}
			sh.pools[key] = p
		}
		idx, ok := p.take(now, len(a.ports))
		if !ok && p.idle() {
			delete(sh.pools, key)
		}
		sh.mu.Unlock()
		if ok {
			a.inUse.Add(1)
			if n := a.leases.Add(1); n%sweepEvery == 0 {
				a.sweep(int(n/sweepEvery)%len(a.shards), now)
			}
			return &Lease{a: a, key: key, idx: idx, port: a.ports[idx]}, nil
		}
	}
	a.exhausted.Add(1)
	return nil, fmt.Errorf("%w for %v (%d source addresses, %d ports each)", ErrExhausted, remote, len(srcs), len(a.ports))
}

// sweepEvery is how many leases pass between sweeps of one shard, which
// drop pools that only hold expired aging ports: a destination never dialed
// again would otherwise keep them.
const sweepEvery = 1024

func (a *Allocator) sweep(i int, now int64) {
	sh := &a.shards[i]
	sh.mu.Lock()
	for k, p := range sh.pools {
		p.expire(now)
		if p.idle() {
			delete(sh.pools, k)
		}
	}
	sh.mu.Unlock()
}

// CloseSide says which side of a connection closed first, which decides
// whether its port may still be held by TIME_WAIT.
type CloseSide int

const (
	// LocalClose: our side closed first (or cannot tell): the port ages.
	LocalClose CloseSide = iota
	// PeerClose: the peer's FIN or RST came first, or no connection was
	// made: the port is reusable at once.
	PeerClose
)

// Lease is a source address and port held for one connection.
type Lease struct {
	a    *Allocator
	key  poolKey
	idx  uint16
	port uint16
	done atomic.Bool
}

// Source is the leased local address; its port is 0 under the Kernel
// strategy.
func (l *Lease) Source() netip.AddrPort { return netip.AddrPortFrom(l.key.src, l.port) }

// Remote is the destination the lease is for.
func (l *Lease) Remote() netip.AddrPort { return l.key.dst }

// Bind prepares the socket fd for the strategy (SO_REUSEADDR for Tracked;
// IP_BIND_ADDRESS_NO_PORT and IP_LOCAL_PORT_RANGE for Kernel) and binds it
// to Source. fd must be a TCP socket of the remote's family.
func (l *Lease) Bind(fd int) error {
	o := rawsock.BindOptions{ReuseAddr: true}
	if l.a.strategy == Kernel {
		o = rawsock.BindOptions{NoPort: true, RangeLow: l.a.rng.Low, RangeHigh: l.a.rng.High}
	}
	return rawsock.BindForConnect(fd, l.Source(), o)
}

// BindPrepared binds fd to Source without setting any option: for sockets
// created ahead of time (by sockpool) with the options the allocator's
// SocketOptions lists.
func (l *Lease) BindPrepared(fd int) error {
	return rawsock.BindForConnect(fd, l.Source(), rawsock.BindOptions{})
}

// SocketOptions are the options Lease.Bind sets, for callers that create
// sockets ahead of time and bind them with BindPrepared.
type SocketOptions struct {
	ReuseAddr         bool  // SO_REUSEADDR (Tracked)
	BindAddressNoPort bool  // IP_BIND_ADDRESS_NO_PORT (Kernel)
	LocalPortRange    Range // IP_LOCAL_PORT_RANGE when not zero (Kernel)
}

// SocketOptions reports what Lease.Bind would set.
func (a *Allocator) SocketOptions() SocketOptions {
	if a.strategy == Kernel {
		return SocketOptions{BindAddressNoPort: true, LocalPortRange: a.rng}
	}
	return SocketOptions{ReuseAddr: true}
}

// Release returns the port. Releasing a lease more than once does nothing.
func (l *Lease) Release(side CloseSide) {
	var until int64
	if side == LocalClose && l.a.aging > 0 {
		until = l.a.now() + l.a.aging
	}
	l.release(until, false)
}

// collisionAging is how long a port found held outside the allocator is
// left alone: whatever holds it (a listener, another program's connection)
// usually holds it for a while, so the next attempts try other ports.
const collisionAging = int64(time.Second)

// collided returns a port found held outside the allocator to its own
// queue, so ports our side closed keep their shorter aging.
func (l *Lease) collided() {
	l.release(l.a.now()+collisionAging, true)
}

func (l *Lease) release(until int64, collided bool) {
	if !l.done.CompareAndSwap(false, true) {
		return
	}
	a := l.a
	a.inUse.Add(-1)
	if a.strategy == Kernel {
		return
	}
	sh := &a.shards[maphash.Comparable(a.seed, l.key)%uint64(len(a.shards))]
	sh.mu.Lock()
	p := sh.pools[l.key]
	// The pool exists: it is only dropped when nothing is leased from it.
	if collided {
		p.giveCollided(l.idx, until)
	} else {
		p.give(l.idx, until)
	}
	if p.idle() {
		delete(sh.pools, l.key)
	}
	sh.mu.Unlock()
}

// Stats is a snapshot of an Allocator's counters.
type Stats struct {
	InUse      int64  // leases held now
	Aging      int    // ports waiting out their aging period now
	Leases     uint64 // leases handed out since New
	Exhausted  uint64 // Acquire calls that found no port
	Collisions uint64 // ports found held outside the allocator
	Pools      int    // (source, destination) pools in memory
	// Busiest is the most ports leased or aging in one (source,
	// destination) pool (Tracked; the kernel's own count is not visible
	// to the Kernel strategy, so 0 there). RangeSize is the ports per
	// source address: a pool is full at RangeSize.
	Busiest   int
	RangeSize int
}

// Stats reads the counters, dropping pools that hold nothing but expired
// aging ports on the way. It visits every pool, so it is meant for scrapes
// and tests, not for a per-connection path.
func (a *Allocator) Stats() Stats {
	s := Stats{
		InUse:      a.inUse.Load(),
		Leases:     a.leases.Load(),
		Exhausted:  a.exhausted.Load(),
		Collisions: a.collisions.Load(),
		RangeSize:  len(a.ports),
	}
	now := a.now()
	for i := range a.shards {
		a.sweep(i, now)
		sh := &a.shards[i]
		sh.mu.Lock()
		s.Pools += len(sh.pools)
		for _, p := range sh.pools {
			aging := p.agingAt(now)
			s.Aging += aging
			s.Busiest = max(s.Busiest, p.leased+aging)
		}
		sh.mu.Unlock()
	}
	return s
}
