// Package sockopt is the one set of TCP socket options every connopt
// component takes (listener, sockpool, client, server), so that a connection
// behaves the same whichever way it was made, and an option is defined,
// defaulted and validated in one place.
//
// Every connopt Config follows one rule for its fields:
//
//   - zero means the documented default;
//   - a negative number turns off a feature that is on by default, where the
//     field says so (Options.KeepAlive, listener.Config.DeferAccept,
//     ports.Config.Aging, server.Config.DrainTimeout), and is
//     ErrInvalidConfig everywhere else;
//   - a boolean's zero value is the default, and setting it does what its
//     name says (Nagle, listener.Config.ReusePort, server.Config.DisableMetrics).
//
// Invalid values are reported by the constructor (listener.Listen,
// sockpool.New, client.NewDialer, server.New, prefork.New), with an error that matches
// ErrInvalidConfig and names the field.
package sockopt

import (
	"net"
	"time"

	"github.com/connopt/connopt/internal/confcheck"
)

// Go's own keep-alive defaults (net.KeepAliveConfig), so that a socket made
// by connopt probes a dead peer exactly as one made by package net.
const (
	DefaultKeepAlive         = 15 * time.Second
	DefaultKeepAliveInterval = 15 * time.Second
	DefaultKeepAliveCount    = 9
)

// The kernel's limits for the keep-alive options (MAX_TCP_KEEPIDLE,
// MAX_TCP_KEEPINTVL, MAX_TCP_KEEPCNT in include/net/tcp.h). A value past
// one is ErrInvalidConfig at construction: the kernel would refuse it with
// EINVAL, and package net, which ignores that error, leaves the socket
// with the kernel's defaults for that option and, for an idle time, for
// the ones after it too.
const (
	MaxKeepAlive         = 32767 * time.Second
	MaxKeepAliveInterval = 32767 * time.Second
	MaxKeepAliveCount    = 127
)

// ErrInvalidConfig is matched (errors.Is) by every error a connopt
// constructor returns for a Config value that has no meaning. Each package's
// ErrInvalidConfig is this same value.
var ErrInvalidConfig = confcheck.ErrInvalid

// ErrUnsupported is returned where an option or a whole component needs
// Linux. It matches errors.ErrUnsupported; each package's ErrUnsupported is
// this same value.
var ErrUnsupported = confcheck.ErrUnsupported

// Options are the TCP socket options connopt sets once, where a socket is
// made: on the listening socket (inherited by every accepted one) or when a
// pool creates a socket for dialing. The zero value is what package net
// does: TCP_NODELAY on, keep-alive probes after 15 s idle every 15 s, 9 of
// them, and the kernel's buffer autotuning.
type Options struct {
	// KeepAlive is the idle time before the first keep-alive probe
	// (TCP_KEEPIDLE). Zero means DefaultKeepAlive; negative turns probes
	// off (SO_KEEPALIVE 0), as net.Dialer.KeepAlive does. The kernel keeps
	// whole seconds: a fraction is rounded up, as package net rounds it
	// (1.5 s is 2 s). At most MaxKeepAlive.
	KeepAlive time.Duration
	// KeepAliveInterval (TCP_KEEPINTVL) and KeepAliveCount (TCP_KEEPCNT)
	// time the probes after the first. Zero means their Default constants;
	// the interval is rounded up to whole seconds like KeepAlive. At most
	// MaxKeepAliveInterval and MaxKeepAliveCount.
	KeepAliveInterval time.Duration
	KeepAliveCount    int

	// Nagle turns Nagle's algorithm on (TCP_NODELAY off): small writes wait
	// to be coalesced. Off by default, as in package net. On a listener it
	// costs one setsockopt per accepted connection, because Go's runtime
	// sets TCP_NODELAY on each one.
	Nagle bool

	// ReadBuffer and WriteBuffer are SO_RCVBUF and SO_SNDBUF. Zero keeps
	// the kernel's autotuning, which is almost always better.
	ReadBuffer  int
	WriteBuffer int
}

// Validate reports the first field whose value has no meaning, with an
// error matching ErrInvalidConfig.
func (o Options) Validate() error {
	if err := confcheck.NonNegative(
		confcheck.Duration("KeepAliveInterval", o.KeepAliveInterval),
		confcheck.Int("KeepAliveCount", o.KeepAliveCount),
		confcheck.Int("ReadBuffer", o.ReadBuffer),
		confcheck.Int("WriteBuffer", o.WriteBuffer),
	); err != nil {
		return err
	}
	switch {
	case o.KeepAlive > MaxKeepAlive:
		return confcheck.Invalid("KeepAlive is %v, past the kernel's limit for TCP_KEEPIDLE (%v)", o.KeepAlive, MaxKeepAlive)
	case o.KeepAliveInterval > MaxKeepAliveInterval:
		return confcheck.Invalid("KeepAliveInterval is %v, past the kernel's limit for TCP_KEEPINTVL (%v)", o.KeepAliveInterval, MaxKeepAliveInterval)
	case o.KeepAliveCount > MaxKeepAliveCount:
		return confcheck.Invalid("KeepAliveCount is %d, past the kernel's limit for TCP_KEEPCNT (%d)", o.KeepAliveCount, MaxKeepAliveCount)
	}
	return nil
}

// KeepAliveConfig returns the keep-alive settings o stands for, with the
// defaults filled in, in the form net.Dialer and net.ListenConfig take
// (with Enable false, also set their KeepAlive to -1: net reads a zero
// KeepAlive as "on").
func (o Options) KeepAliveConfig() net.KeepAliveConfig {
	if o.KeepAlive < 0 {
		return net.KeepAliveConfig{Enable: false, Idle: -1, Interval: -1, Count: -1}
	}
	return net.KeepAliveConfig{
		Enable:   true,
		Idle:     or(o.KeepAlive, DefaultKeepAlive),
		Interval: or(o.KeepAliveInterval, DefaultKeepAliveInterval),
		Count:    or(o.KeepAliveCount, DefaultKeepAliveCount),
	}
}

func or[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}
