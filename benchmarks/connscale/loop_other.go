//go:build !linux

package main

import (
	"context"
	"errors"
	"net"
	"sync/atomic"

	"github.com/connopt/connopt/client"
)

// runLoopClient: the event-loop client is epoll's; elsewhere use the
// goroutine mode.
func runLoopClient(ctx context.Context, d *client.Dialer, o clientOpts, s *clientStats, rampDone chan<- struct{}) error {
	close(rampDone)
	return errors.New("connscale: the event-loop client needs Linux (epoll)")
}

func runGnetClient(ctx context.Context, d *client.Dialer, o clientOpts, s *clientStats, rampDone chan<- struct{}) error {
	close(rampDone)
	return errors.New("connscale: the gnet client is built on Linux only here")
}

func serveLoop(ln net.Listener, pings *atomic.Uint64, open *atomic.Int64) error {
	return errors.New("connscale: the event-loop server needs Linux (epoll)")
}
