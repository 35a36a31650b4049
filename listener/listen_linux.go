package listener

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/connopt/connopt/internal/rawsock"
)

func listenTCP(ctx context.Context, network, address string, cfg *Config) (*net.TCPListener, error) {
	opts := rawsock.TCPOptions(cfg.Options)
	// The runtime sets TCP_NODELAY per accept anyway (Accept clears it
	// again for Nagle); set here so the inherited state agrees.
	opts.NoDelay = true
	opts.DeferAccept = cfg.deferAccept()
	opts.FastOpenQueue = cfg.FastOpenQueue
	opts.ReusePort = cfg.ReusePort
	lc := net.ListenConfig{
		// Negative: the runtime must not set keep-alive options on each
		// accepted socket; the kernel copies them from the listener.
		KeepAlive: -1,
		Control: func(_, _ string, c syscall.RawConn) error {
			return rawsock.Control(c, func(fd int) error { return rawsock.ApplyListener(fd, opts) })
		},
	}
	ln, err := lc.Listen(ctx, network, address)
	if err != nil {
		return nil, err
	}
	tl := ln.(*net.TCPListener)
	if cfg.Backlog > 0 {
		if err := setBacklog(tl, cfg.Backlog); err != nil {
			tl.Close()
			return nil, &net.OpError{Op: "listen", Net: network, Addr: tl.Addr(), Err: fmt.Errorf("backlog %d: %w", cfg.Backlog, err)}
		}
	}
	return tl, nil
}

func setBacklog(tl *net.TCPListener, backlog int) error {
	rc, err := tl.SyscallConn()
	if err != nil {
		return err
	}
	return rawsock.Control(rc, func(fd int) error { return rawsock.SetListenBacklog(fd, backlog) })
}

func fileOf(tl *net.TCPListener) (*os.File, error) {
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil, err
	}
	var dup int
	err = rawsock.Control(rc, func(fd int) error {
		var err error
		dup, err = rawsock.Dup(fd)
		return err
	})
	if err != nil {
		return nil, &net.OpError{Op: "file", Net: "tcp", Addr: tl.Addr(), Err: err}
	}
	return os.NewFile(uintptr(dup), "tcp:"+tl.Addr().String()), nil
}
