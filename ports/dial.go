package ports

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/connopt/connopt/internal/netaddr"
	"github.com/connopt/connopt/internal/rawsock"
	"github.com/connopt/connopt/internal/tcpconn"
)

// Connect leases a source for remote and calls connect with it, which must
// bind its socket with Lease.Bind and connect. When connect fails with
// EADDRINUSE or EADDRNOTAVAIL (the port is held by a socket outside the
// allocator, or under the Kernel strategy the source has no port left),
// Connect retires that port (it ages) and tries another, up to
// Config.Attempts times (under Kernel, once per source). On success the
// lease is held until the caller releases it, typically with
// ReleaseAfterClose as the connection's close hook; on failure no lease is
// held and the error says why: ErrExhausted, ErrCollisions, or connect's
// own.
func (a *Allocator) Connect(remote netip.AddrPort, connect func(*Lease) error) (*Lease, error) {
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	attempts := a.attempts
	if a.strategy == Kernel {
		attempts = max(1, len(a.sources(remote.Addr())))
	}
	var lastErr error
	// One start for the whole walk: attempt i takes source first+i, so
	// under Kernel every source is tried once.
	first := a.nextSource()
	for i := range attempts {
		l, err := a.acquire(remote, first+i)
		if err != nil {
			if lastErr != nil {
				err = fmt.Errorf("%w (after %w)", err, lastErr)
			}
			return nil, err
		}
		err = connect(l)
		if err == nil {
			return l, nil
		}
		if !isCollision(err) {
			l.Release(PeerClose) // nothing was connected from this port
			return nil, err
		}
		lastErr = err
		if a.strategy == Kernel {
			l.Release(PeerClose)
			continue
		}
		a.collisions.Add(1)
		l.collided()
	}
	if a.strategy == Kernel {
		a.exhausted.Add(1)
		return nil, fmt.Errorf("%w for %v: %w", ErrExhausted, remote, lastErr)
	}
	return nil, fmt.Errorf("%w: %d ports tried for %v: %w", ErrCollisions, attempts, remote, lastErr)
}

// ReleaseAfterClose releases the lease the way a closed connection should:
// at once if the peer had closed first, after aging otherwise. Its shape is
// that of a connection close hook.
func (l *Lease) ReleaseAfterClose(peerClosedFirst bool) {
	if peerClosedFirst {
		l.Release(PeerClose)
	} else {
		l.Release(LocalClose)
	}
}

// Dial is DialContext with a background context.
func (a *Allocator) Dial(network, address string) (net.Conn, error) {
	return a.DialContext(context.Background(), network, address)
}

// DialContext connects to address, an IP:port literal (names are the
// caller's business: resolve them where the connection will be made), from
// a leased source address and port, retrying on collisions as Connect does.
// The connection's Close releases the lease with ReleaseAfterClose.
//
// It uses net.Dialer with a Control hook that binds, so the socket options
// Go sets on dialed connections are set here too; connopt's client package
// has the cheaper path.
func (a *Allocator) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if err := netaddr.CheckNetwork(network); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	remote, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: &net.AddrError{Err: "not an IP:port literal", Addr: address}}
	}
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	raddr := net.TCPAddrFromAddrPort(remote)
	family, err := netaddr.Fit(network, remote.Addr())
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	var conn net.Conn
	l, err := a.Connect(remote, func(l *Lease) error {
		d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			return rawsock.Control(c, l.Bind)
		}}
		var err error
		conn, err = d.DialContext(ctx, family, remote.String())
		// The cause only: the *net.OpError is built once, below, with
		// the network the caller named.
		if oe, ok := err.(*net.OpError); ok {
			err = oe.Err
		}
		return err
	})
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: raddr, Err: err}
	}
	return tcpconn.New(conn.(*net.TCPConn), &uncounted, l.ReleaseAfterClose), nil
}

// uncounted receives the wrapper's connection counts, which nothing reads:
// DialContext's connections are counted by their leases (Stats.InUse).
var uncounted tcpconn.Counters

// isCollision reports a port held by a socket outside the allocator.
func isCollision(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL)
}
