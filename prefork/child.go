package prefork

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"

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
