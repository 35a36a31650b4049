package prefork

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/confcheck"
	"github.com/connopt/connopt/internal/drain"
	"github.com/connopt/connopt/listener"
)

// The slot this process serves, read once: the variable is removed from the
// environment so that processes the child starts are not children of the
// supervisor.
var slot = func() int {
	v, ok := os.LookupEnv(envSlot)
	if !ok {
		return -1
	}
	os.Unsetenv(envSlot)
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return -1
	}
	// Inherited descriptors are not close-on-exec: keep them from
	// programs this child runs.
	syscall.CloseOnExec(listenFD)
	syscall.CloseOnExec(readyFD)
	return n
}()

// Child reports whether a Supervisor started this process.
func Child() bool { return slot >= 0 }

// Slot is this child's slot, 0 to Children-1 (a restarted or upgraded child
// takes the slot of the one it replaces), or -1 outside a child.
func Slot() int { return slot }

// Listener is the socket the supervisor passed to this child, with
// cfg's Accept-side fields (WrapConns, Nagle, MaxAcceptBackoff, Metrics; the
// socket options were set by the parent). Its first Accept tells the
// supervisor that the child is serving. It can be taken once; outside a
// child it returns ErrNotChild.
func Listener(cfg listener.Config) (*ChildListener, error) {
	if !Child() {
		return nil, ErrNotChild
	}
	taken.Lock()
	defer taken.Unlock()
	if taken.done {
		return nil, fmt.Errorf("prefork: the inherited listener was taken already")
	}
	f := os.NewFile(listenFD, "prefork-listener")
	ln, err := listener.FileListener(f, cfg)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("prefork: inherited listener: %w", err)
	}
	taken.done = true
	return &ChildListener{Listener: ln, ready: os.NewFile(readyFD, "prefork-ready")}, nil
}

var taken struct {
	sync.Mutex
	done bool
}

// ChildListener is a child's listener: a *listener.Listener whose first
// Accept reports readiness to the supervisor.
type ChildListener struct {
	*listener.Listener
	once  sync.Once
	ready *os.File
}

// Accept tells the supervisor, on the first call, that this child serves,
// then accepts as listener.Listener does.
func (l *ChildListener) Accept() (net.Conn, error) {
	l.once.Do(l.signalReady)
	return l.Listener.Accept()
}

func (l *ChildListener) signalReady() {
	if l.ready != nil {
		l.ready.Write([]byte{1})
		l.ready.Close()
	}
}

// ServeFasthttp is the whole of a prefork program for a plain fasthttp
// server: in the parent it opens the sockets and runs a Supervisor until
// SIGINT or SIGTERM, as Serve does; in each child it serves srv on the
// inherited listener and, on SIGTERM or SIGINT (a hand-over, or the stop),
// stops it the way package server does: the listener closes, every
// response from then on says Connection: close, keep-alive connections get
// cfg.DrainTimeout to send one more request (answered the same way), then
// srv's Shutdown waits for requests in flight until StopTimeout (the
// supervisor kills the child after that anyway). It returns only when all
// of that is done, so the process never exits with a request in flight.
// srv's Handler and ConnState are wrapped (its own ConnState still runs).
//
// prefork.Serve with `go func() { <-ctx.Done(); srv.Shutdown() }()` and
// `return srv.Serve(ln)` loses requests on every hand-over: Serve returns
// as soon as Shutdown closes the listener, so the child exits with
// requests in flight, and Shutdown closes idle keep-alive connections under
// clients that may be sending on them.
func ServeFasthttp(network, address string, cfg Config, srv *fasthttp.Server) error {
	return ServeFasthttpWith(network, address, cfg, srv, srv.Serve)
}

// ServeFasthttpWith is ServeFasthttp for a fasthttp.Server that a framework
// serves itself: serve(ln) must serve srv on ln and return when srv stops.
// For Fiber (v2 and v3), srv is app.Server() and serve is app.Listener
// (Fiber's OnShutdown hooks do not run: the stop is fasthttp's, drained).
func ServeFasthttpWith(network, address string, cfg Config, srv *fasthttp.Server, serve func(net.Listener) error) error {
	if err := confcheck.NonNegative(confcheck.Duration("StopTimeout", cfg.StopTimeout)); err != nil {
		return fmt.Errorf("prefork: %w", err)
	}
	return Serve(network, address, cfg, func(ctx context.Context, ln net.Listener) error {
		t := drain.New()
		t.Install(srv)
		errc := make(chan error, 1)
		go func() { errc <- serve(ln) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		drainFor := -time.Duration(1)
		if cfg.DrainTimeout >= 0 {
			drainFor = cmp.Or(cfg.DrainTimeout, drain.DefaultTimeout)
		}
		err := t.Stop(srv, func() { ln.Close() }, drainFor, time.Now().Add(cmp.Or(cfg.StopTimeout, DefaultStopTimeout)))
		if serveErr := <-errc; serveErr != nil && err == nil {
			err = serveErr
		}
		return err
	})
}

// Serve is the whole of a prefork program: in the parent it opens the
// sockets and runs a Supervisor (New, then Run with signals) until SIGINT
// or SIGTERM; in each child it calls serve with the inherited listener and
// a context that is done when the child is told to stop (SIGTERM, or
// SIGINT), and serve should then stop gracefully and return. cfg.Listener
// configures the sockets (parent) and their Accept side (children).
func Serve(network, address string, cfg Config, serve func(ctx context.Context, ln net.Listener) error) error {
	if !Child() {
		s, err := New(network, address, cfg)
		if err != nil {
			return err
		}
		return s.Run(context.Background())
	}
	ln, err := Listener(cfg.Listener)
	if err != nil {
		return err
	}
	defer ln.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, ln)
}
