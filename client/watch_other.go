//go:build !linux

package client

import (
	"sync/atomic"

	"github.com/connopt/connopt/internal/tcpconn"
)

// Outside Linux nothing is watched (NewDialer fails there anyway).
type watcher struct{ goneIdle, unwatched atomic.Uint64 }

func newWatcher() (*watcher, error)                       { return &watcher{}, nil }
func (w *watcher) add(fd int, c *tcpconn.FileConn) uint64 { return 0 }
func (w *watcher) remove(token uint64)                    {}
func (w *watcher) close()                                 {}
