package ports

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/connopt/connopt/internal/rawsock"
	"github.com/connopt/connopt/internal/tcpconn"
)

// Dial is DialContext with a background context.
func (a *Allocator) Dial(network, address string) (net.Conn, error) {
	return a.DialContext(context.Background(), network, address)
}

// DialContext connects to address, an IP:port literal (names are the
// caller's business: resolve them where the connection will be made), from
// a leased source address and port. It retries on ports held outside the
// allocator (EADDRINUSE at bind, EADDRNOTAVAIL at connect) up to
// Config.Attempts times. The connection is a *listener.Conn-compatible
// *tcpconn.Conn: its Close releases the lease, at once if the peer had
// closed first, after the aging period otherwise.
//
// It uses net.Dialer with a Control hook that binds, so the socket options
// Go sets on dialed connections are set here too; connopt's client package
// has the cheaper path.
func (a *Allocator) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	remote, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("ports: %q is not an IP:port literal: %w", address, err)}
	}
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	raddr := net.TCPAddrFromAddrPort(remote)
	switch {
	case network == "tcp":
	case network == "tcp4" && remote.Addr().Is4(), network == "tcp6" && remote.Addr().Is6():
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Addr: raddr, Err: fmt.Errorf("ports: network %q does not fit %v", network, remote)}
	}
	family := "tcp4"
	if remote.Addr().Is6() {
		family = "tcp6"
	}

	attempts := a.attempts
	if a.strategy == Kernel {
		// The kernel already skips ports in use; EADDRNOTAVAIL means
		// this source has no port left for the destination.
		attempts = max(1, len(a.sources(remote.Addr())))
	}
	var lastErr error
	for i := range attempts {
		l, err := a.acquire(remote, i)
		if err != nil {
			if lastErr != nil {
				err = fmt.Errorf("%w (after %w)", err, lastErr)
			}
			return nil, &net.OpError{Op: "dial", Net: network, Addr: raddr, Err: err}
		}
		d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			return rawsock.Control(c, l.Bind)
		}}
		c, err := d.DialContext(ctx, family, remote.String())
		if err == nil {
			return tcpconn.New(c.(*net.TCPConn), &a.conns, l.releaseAfterClose), nil
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
		return nil, &net.OpError{Op: "dial", Net: network, Addr: raddr, Err: fmt.Errorf("%w for %v: %w", ErrExhausted, remote, lastErr)}
	}
	return nil, &net.OpError{Op: "dial", Net: network, Addr: raddr, Err: fmt.Errorf("%w: %d ports tried for %v: %w", ErrCollisions, attempts, remote, lastErr)}
}

func (l *Lease) releaseAfterClose(peerClosed bool) {
	if peerClosed {
		l.Release(PeerClose)
	} else {
		l.Release(LocalClose)
	}
}

// isCollision reports a port held by a socket outside the allocator.
func isCollision(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL)
}
