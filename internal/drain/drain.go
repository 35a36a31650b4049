// Package drain is the graceful stop of a fasthttp.Server that connopt's
// server and prefork.ServeFasthttp share: once the stop begins every
// response says Connection: close, keep-alive connections get a while to
// send one more request (answered the same way) instead of being closed
// under a client that may be sending on them, and only then does
// fasthttp's Shutdown close what is left.
package drain

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// DefaultTimeout is how long keep-alive connections get to send one more
// request once the stop has begun.
const DefaultTimeout = time.Second

// ErrShutdownTimeout is returned by Stop when connections were still busy
// at the deadline (they were closed).
var ErrShutdownTimeout = errors.New("shutdown deadline passed; connections still open were closed")

// Tracker keeps a fasthttp.Server's open connections and knows whether the
// stop has begun. Install it before the server serves.
type Tracker struct {
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	stopping atomic.Bool
	drained  chan struct{} // a send when the last connection closes during the stop
}

// New returns a Tracker.
func New() *Tracker {
	return &Tracker{conns: map[net.Conn]struct{}{}, drained: make(chan struct{}, 1)}
}

// Install wraps fs's Handler (responses say Connection: close once the
// stop has begun) and ConnState (the tracker sees connections open and
// close; fs's own hook, if any, still runs).
func (t *Tracker) Install(fs *fasthttp.Server) {
	h := fs.Handler
	fs.Handler = func(ctx *fasthttp.RequestCtx) {
		h(ctx)
		if t.stopping.Load() {
			ctx.SetConnectionClose()
		}
	}
	next := fs.ConnState
	fs.ConnState = func(c net.Conn, st fasthttp.ConnState) {
		t.track(c, st)
		if next != nil {
			next(c, st)
		}
	}
}

// Stopping reports whether the stop has begun.
func (t *Tracker) Stopping() bool { return t.stopping.Load() }

// track is called on every state change, twice per request (active,
// idle): only opening and closing take the lock.
func (t *Tracker) track(c net.Conn, st fasthttp.ConnState) {
	switch st {
	case fasthttp.StateNew:
		t.mu.Lock()
		t.conns[c] = struct{}{}
		t.mu.Unlock()
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		t.mu.Lock()
		delete(t.conns, c)
		last := len(t.conns) == 0
		t.mu.Unlock()
		if last && t.stopping.Load() {
			select {
			case t.drained <- struct{}{}:
			default:
			}
		}
	}
}

// Stop stops fs gracefully: the stop begins (responses say Connection:
// close), closeListeners runs (new connections are refused), open
// connections get drain to close by themselves (none if drain is
// negative; bounded by the deadline), then fs.ShutdownWithContext waits
// for the rest until deadline, when those still open are closed and
// ErrShutdownTimeout is returned.
func (t *Tracker) Stop(fs *fasthttp.Server, closeListeners func(), drain time.Duration, deadline time.Time) error {
	t.stopping.Store(true)
	closeListeners()
	if drain >= 0 {
		t.wait(min(time.Until(deadline), drain))
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	err := fs.ShutdownWithContext(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.mu.Lock()
		for c := range t.conns {
			c.Close()
		}
		t.mu.Unlock()
		return ErrShutdownTimeout
	}
	return err
}

// wait waits until no connection is open, for at most d.
func (t *Tracker) wait(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		t.mu.Lock()
		n := len(t.conns)
		t.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-t.drained:
		case <-timer.C:
			return
		}
	}
}
