//go:build !linux

package listener

import (
	"context"
	"net"
	"os"
)

// Outside Linux the options are left to the runtime, which sets keep-alive
// on each accepted socket; ReusePort, DeferAccept, FastOpenQueue, Backlog and
// the buffer sizes are ignored.
func listenTCP(ctx context.Context, network, address string, cfg *Config) (*net.TCPListener, error) {
	lc := net.ListenConfig{KeepAliveConfig: cfg.KeepAliveConfig()}
	if !lc.KeepAliveConfig.Enable {
		lc.KeepAlive = -1
	}
	ln, err := lc.Listen(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

func fileOf(tl *net.TCPListener) (*os.File, error) { return tl.File() }
