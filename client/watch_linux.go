package client

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/connopt/connopt/internal/rawsock"
	"github.com/connopt/connopt/internal/tcpconn"
)

// watcher learns that an upstream closed a connection from what happens
// anyway: the kernel's FIN or RST arriving on it. Every connection the
// dialer hands out is registered (EPOLLRDHUP|EPOLLET, no read interest, so
// responses arriving wake nothing) with one epoll instance per dialer,
// whose own descriptor is watched by the runtime poller: one goroutine per
// dialer, parked in the poller, no goroutine per connection, no locked
// thread, no probe. The callback drains the kernel's ready list with
// epoll_wait(…, 0), so no event is lost between the runtime's readiness
// reset and the wait; a wait that returns fewer events than it has room
// for has drained it. An epoll instance belongs to no network namespace:
// sockets of every namespace the dialer serves register with it.
//
// Each registration carries a token, not the descriptor: a descriptor
// number reused after Close gets a new token, so a stale event can never
// mark the connection that now has that number.
type watcher struct {
	f  *os.File
	rc syscall.RawConn

	// conns maps tokens to connections: a sync.Map, so that dials and
	// closes on many goroutines share no lock.
	conns sync.Map // uint64 -> *tcpconn.FileConn
	next  atomic.Uint64

	// goneIdle counts connections whose peer closed while they were idle
	// (nothing written since the last read); unwatched counts connections
	// that could not be registered (epoll_ctl failed: they work as before).
	goneIdle  atomic.Uint64
	unwatched atomic.Uint64
	done      chan struct{}
}

const watchEvents = unix.EPOLLRDHUP | unix.EPOLLET

func newWatcher() (*watcher, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(fd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	w := &watcher{f: f, rc: rc, done: make(chan struct{})}
	go w.run()
	return w, nil
}

// add registers c, whose descriptor is fd, and returns the token to remove
// it with; 0 if it could not be registered.
func (w *watcher) add(fd int, c *tcpconn.FileConn) uint64 {
	token := w.next.Add(1)
	w.conns.Store(token, c)
	ev := unix.EpollEvent{Events: watchEvents, Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
	err := rawsock.Control(w.rc, func(epfd int) error { return unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev) })
	if err != nil {
		w.remove(token)
		w.unwatched.Add(1)
		return 0
	}
	return token
}

// remove forgets a connection at its Close. Closing the descriptor removes
// its registration from the epoll instance: no syscall here.
func (w *watcher) remove(token uint64) {
	w.conns.Delete(token)
}

func (w *watcher) run() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 128)
	// Read returns only when the epoll file is closed: the callback never
	// reports done, it drains and waits again.
	w.rc.Read(func(epfd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(epfd), events, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if n <= 0 {
				return false
			}
			w.handle(events[:n])
			if n < len(events) {
				// The ready list is empty: an event arriving from now
				// on makes the epoll descriptor ready again, and the
				// runtime wakes this callback for it.
				return false
			}
		}
	})
}

func (w *watcher) handle(events []unix.EpollEvent) {
	for _, ev := range events {
		token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
		v, ok := w.conns.Load(token)
		if !ok {
			continue // closed meanwhile: its token is gone
		}
		c := v.(*tcpconn.FileConn)
		if idle, first := c.MarkGone(); idle && first {
			w.goneIdle.Add(1)
		}
	}
}

// close stops the watcher. Connections already made keep working; they are
// no longer watched.
func (w *watcher) close() {
	w.f.Close()
	<-w.done
}

// len and last are for tests: how many connections are registered, and the
// newest token.
func (w *watcher) len() int {
	n := 0
	w.conns.Range(func(any, any) bool { n++; return true })
	return n
}

func (w *watcher) last() uint64 {
	return w.next.Load()
}
