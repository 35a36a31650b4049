package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connopt/connopt/client"
)

// The event-loop client: one epoll instance and one goroutine per worker
// own every connection's readiness and timers, so a held connection costs a
// small struct and two heap entries instead of a goroutine, its stack, a
// timer and a reader. Connections are dialed through client.Dialer as in
// the goroutine mode; the loop then takes the socket over: it reads and
// writes the Conn's descriptor itself, never through the Conn, and keeps
// the Conn only to close it (which also ends its ports lease).
//
// The runtime's poller registered the descriptor when the Conn was made,
// and nobody waits on it there: every packet then woke two threads, the
// loop's and the runtime's (perf at 250,000 connections: the wake-ups were
// the largest cost of a ping). takeOver removes the descriptor from the
// runtime's epoll instance (found by runtimeEpoll); closing the Conn later
// asks the runtime to remove it again, which fails with ENOENT and is
// ignored there. A duplicate descriptor would leave the runtime out too,
// but costs a second descriptor per connection against the 20,000 a
// process may have, and closing the Conn instead ends its ports lease.

// loopConn is one held connection.
type loopConn struct {
	conn   net.Conn // the dialed Conn: closing it ends the ports lease
	fd     int
	seq    uint32 // the ping in flight (0: none); a timer for an older one is stale
	sentAt time.Time
	got    int // bytes of the current pong read so far
}

// loopTimer is a ping due (pong false) or a pong's deadline (pong true).
type loopTimer struct {
	at   time.Time
	c    *loopConn
	seq  uint32
	pong bool
}

// timerHeap is a binary min-heap of timers by time, typed: container/heap
// boxes every value pushed or popped into an interface, an allocation per
// operation, four per ping.
type timerHeap []loopTimer

func (h *timerHeap) push(t loopTimer) {
	*h = append(*h, t)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if !a[i].at.Before(a[p].at) {
			break
		}
		a[i], a[p] = a[p], a[i]
		i = p
	}
}

func (h *timerHeap) pop() loopTimer {
	a := *h
	top := a[0]
	n := len(a) - 1
	a[0] = a[n]
	a[n] = loopTimer{} // no pointer kept past the end
	a = a[:n]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < n && a[l].at.Before(a[m].at) {
			m = l
		}
		if r := l + 1; r < n && a[r].at.Before(a[m].at) {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}

// takeOver returns c's descriptor, for the loop to use while c is open,
// and takes it out of the runtime's poller.
func takeOver(c net.Conn) (int, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T has no descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return -1, err
	}
	rt, err := runtimeEpoll()
	if err != nil {
		return -1, err
	}
	if err := unix.EpollCtl(rt, unix.EPOLL_CTL_DEL, fd, nil); err != nil && err != unix.ENOENT {
		return -1, fmt.Errorf("epoll_ctl(runtime poller, DEL): %w", err)
	}
	return fd, nil
}

// runtimeEpoll is the descriptor of the runtime poller's epoll instance:
// the one whose /proc/self/fdinfo lists a pipe this process just opened
// through package os (which registers it there).
var runtimeEpoll = sync.OnceValues(func() (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return -1, err
	}
	defer r.Close()
	defer w.Close()
	rc, err := r.SyscallConn()
	if err != nil {
		return -1, err
	}
	pfd := -1
	rc.Control(func(s uintptr) { pfd = int(s) })
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1, err
	}
	want := fmt.Sprintf("tfd: %8d ", pfd)
	for _, e := range ents {
		if link, _ := os.Readlink("/proc/self/fd/" + e.Name()); link != "anon_inode:[eventpoll]" {
			continue
		}
		info, _ := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if strings.Contains(string(info), want) {
			return strconv.Atoi(e.Name())
		}
	}
	return -1, errors.New("the runtime poller's epoll instance is not in /proc/self/fdinfo")
})

// connTable is the loop's connections by descriptor: descriptors are small
// and dense (below the fd limit), so a slice is the map.
type connTable[T any] []*T

func (t *connTable[T]) get(fd int) *T {
	if fd < 0 || fd >= len(*t) {
		return nil
	}
	return (*t)[fd]
}

func (t *connTable[T]) put(fd int, c *T) {
	for fd >= len(*t) {
		*t = append(*t, nil)
	}
	(*t)[fd] = c
}

// rampDial dials o.conns connections through d at o.rate, at most 64 at
// a time, and gives each to hand (on the dialing goroutine); it returns
// when every dial has ended or ctx is done.
func rampDial(ctx context.Context, d *client.Dialer, o clientOpts, s *clientStats, hand func(net.Conn)) {
	gap := time.Second / time.Duration(max(1, o.rate))
	next := time.Now()
	sem := make(chan struct{}, 64) // dials in flight
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 0; i < o.conns && ctx.Err() == nil; i++ {
		if w := time.Until(next); w > 0 {
			time.Sleep(w)
		}
		next = next.Add(gap)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			c, err := d.DialContext(dctx, "tcp", o.server)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					s.fail("dial: " + reason(err))
				}
				return
			}
			hand(c)
		}()
	}
}

// runLoopClient dials o.conns connections at o.rate through d and holds
// them from one event loop until ctx is done, counting into s; rampDone is
// closed when the last dial has ended. Then it resets them all (no
// TIME_WAIT left behind, as in the goroutine mode).
func runLoopClient(ctx context.Context, d *client.Dialer, o clientOpts, s *clientStats, rampDone chan<- struct{}) error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	defer unix.Close(epfd)

	// The ramp dials on its own goroutines (a dial waits for the
	// handshake) and hands descriptors over; the loop polls for them
	// every 10 ms while it runs.
	type handed struct {
		fd   int
		conn net.Conn
	}
	fresh := make(chan handed, 1024)
	rampCtx, stopRamp := context.WithCancel(ctx)
	defer stopRamp()
	go func() {
		defer close(rampDone)
		defer close(fresh)
		rampDial(rampCtx, d, o, s, func(c net.Conn) {
			fd, err := takeOver(c)
			if err != nil {
				c.Close()
				s.fail("dial: " + reason(err))
				return
			}
			select {
			case fresh <- handed{fd, c}:
			case <-rampCtx.Done():
				c.Close()
			}
		})
	}()

	var conns connTable[loopConn]
	var timers timerHeap
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 64)
	var seq uint32
	pending := 0 // pings awaiting their pong
	closeConn := func(c *loopConn, why string) {
		if why != "" {
			s.fail(why)
		}
		if c.seq != 0 {
			pending--
		}
		unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
		c.conn.Close()
		conns.put(c.fd, nil)
		c.seq = 0
		s.open.Add(-1)
	}
	defer func() {
		stopRamp()
		for _, c := range conns {
			if c == nil {
				continue
			}
			unix.SetsockoptLinger(c.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			c.conn.Close()
			s.open.Add(-1)
		}
		for h := range fresh { // the ramp's last hand-overs
			h.conn.Close()
		}
	}()
	// At the end (ctx done), no new ping is sent and the pongs in flight
	// are waited for, up to the timeout, as the goroutine mode finishes
	// its exchange before it looks at ctx.
	ramping := true
	var stopAt, lastFired time.Time
	for {
		if ctx.Err() != nil {
			if stopAt.IsZero() {
				stopAt = time.Now()
			}
			if pending == 0 || time.Since(stopAt) > o.timeout {
				break
			}
		}
		// New connections: registered for input, first ping at a random
		// point of the interval so that pings spread.
		for ramping {
			select {
			case h, ok := <-fresh:
				if !ok {
					ramping = false
					continue
				}
				fd := h.fd
				c := &loopConn{fd: fd, conn: h.conn}
				ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
				if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
					h.conn.Close()
					s.fail("epoll_ctl: " + err.Error())
					continue
				}
				conns.put(fd, c)
				s.established.Add(1)
				s.open.Add(1)
				timers.push(loopTimer{at: time.Now().Add(time.Duration(rand.Int64N(int64(o.interval)))), c: c})
				continue
			default:
			}
			break
		}

		wait := time.Second
		if len(timers) > 0 {
			// Timers wait for the next tick after the last firing, so
			// that pings leave in batches (o.tick 0: each on its own).
			wait = time.Until(later(timers[0].at, lastFired.Add(o.tick)))
		}
		if ramping {
			wait = min(wait, 10*time.Millisecond)
		}
		ms := max(0, int((wait+time.Millisecond-1)/time.Millisecond))
		n, err := unix.EpollWait(epfd, events, ms)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		now := time.Now()
		for _, ev := range events[:max(n, 0)] {
			c := conns.get(int(ev.Fd))
			if c == nil {
				continue
			}
			if ev.Events&unix.EPOLLIN != 0 {
				r, err := unix.Read(c.fd, buf)
				switch {
				case err == unix.EAGAIN:
					continue
				case err != nil:
					closeConn(c, "pong: "+reason(err))
					continue
				case r == 0:
					closeConn(c, "pong: EOF")
					continue
				}
				if c.seq == 0 || c.got+r > len(pong) || string(buf[:r]) != string(pong[c.got:c.got+r]) {
					closeConn(c, fmt.Sprintf("pong: unexpected %q", buf[:r]))
					continue
				}
				if c.got += r; c.got < len(pong) {
					continue
				}
				s.pong(c.sentAt, now)
				c.seq, c.got = 0, 0
				pending--
				timers.push(loopTimer{at: now.Add(o.interval), c: c})
			} else if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				why := "pong: EOF"
				if e, _ := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR); e != 0 {
					why = "pong: " + reason(syscall.Errno(e))
				}
				closeConn(c, why)
			}
		}
		if len(timers) > 0 && !timers[0].at.After(now) {
			lastFired = now
		}
		for len(timers) > 0 && !timers[0].at.After(now) {
			t := timers.pop()
			c := t.c
			if conns.get(c.fd) != c {
				continue // closed (its descriptor number may be another's now)
			}
			if t.pong {
				if c.seq == t.seq {
					s.timeouts.Add(1)
					closeConn(c, "pong: timeout")
				}
				continue
			}
			if !stopAt.IsZero() {
				continue // stopping: no new ping
			}
			seq++
			if seq == 0 {
				seq = 1
			}
			c.seq, c.got, c.sentAt = seq, 0, time.Now()
			if _, err := unix.Write(c.fd, ping); err != nil {
				c.seq = 0 // not pending: nothing was sent
				closeConn(c, "ping: "+reason(err))
				continue
			}
			s.pings.Add(1)
			pending++
			timers.push(loopTimer{at: c.sentAt.Add(o.timeout), c: c, seq: seq, pong: true})
		}
	}
	return nil
}

// served is a connection of serveLoop.
type served struct {
	conn net.Conn
	fd   int
}

// serveLoop is the server side on an event loop: accepted connections are
// handed to one epoll instance, and every "\n" read is answered with a
// pong (several in one write when pings arrive together). It returns when
// the listener is closed, closing every connection.
func serveLoop(ln net.Listener, pings *atomic.Uint64, open *atomic.Int64) error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	defer unix.Close(epfd)
	// Accepted connections come on fresh, with a write to an eventfd in
	// the epoll set: the loop sleeps until there is work (polling for new
	// connections instead woke 56 idle server loops 100 times a second
	// each in the million run).
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(efd)
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	fresh := make(chan *served, 1024)
	accepting := make(chan struct{})
	defer func() { <-accepting; unix.Close(efd) }() // its last write done
	go func() {
		defer close(accepting)
		defer unix.Write(efd, one)
		defer close(fresh)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fd, err := takeOver(c)
			if err != nil {
				c.Close()
				continue
			}
			fresh <- &served{c, fd}
			unix.Write(efd, one)
		}
	}()
	var conns connTable[served]
	closeConn := func(fd int) {
		unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, fd, nil)
		conns.get(fd).conn.Close()
		conns.put(fd, nil)
		open.Add(-1)
	}
	defer func() {
		for fd, c := range conns {
			if c != nil {
				closeConn(fd)
			}
		}
	}()
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 4096)
	out := make([]byte, 0, 4096)
	for {
		for more := true; more; {
			select {
			case sv, ok := <-fresh:
				if !ok {
					return nil // the listener closed
				}
				ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(sv.fd)}
				if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, sv.fd, &ev); err != nil {
					sv.conn.Close()
					continue
				}
				conns.put(sv.fd, sv)
				open.Add(1)
			default:
				more = false
			}
		}
		n, err := unix.EpollWait(epfd, events, -1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		for _, ev := range events[:max(n, 0)] {
			fd := int(ev.Fd)
			if fd == efd {
				var b [8]byte
				unix.Read(efd, b[:]) // reset; fresh is read at the top
				continue
			}
			if conns.get(fd) == nil {
				continue
			}
			r, err := unix.Read(fd, buf)
			if err == unix.EAGAIN {
				continue
			}
			if err != nil || r == 0 {
				closeConn(fd)
				continue
			}
			out = out[:0]
			for _, b := range buf[:r] {
				if b == '\n' {
					out = append(out, pong...)
				}
			}
			if len(out) == 0 {
				continue
			}
			if _, err := unix.Write(fd, out); err != nil {
				closeConn(fd)
				continue
			}
			pings.Add(uint64(len(out) / len(pong)))
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
