package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/connopt/connopt/client"
)

// The gnet client (-gnet): the same connections and pings as the event
// loop of loop_linux.go, held by gnet v2's client instead, to choose between
// a well-kept library and a small loop by measuring both.
//
// gnet's Client.Enroll takes only a *net.TCPConn (connopt's dialed Conn is
// refused with "unsupported protocol") and keeps a duplicate of its
// descriptor, closing the one it was given. So each connection is dialed
// through client.Dialer as in the other modes, a *net.TCPConn is made from
// a duplicate of its descriptor for Enroll, and the dialed Conn is kept
// open (out of the runtime's poller, as the loop keeps it) because closing
// it ends its ports lease. That is two descriptors per connection: run it
// with -per-worker 9000 at most under a 20,000 descriptor limit.
//
// gnet has no per-connection timers: pings and pong deadlines are on a
// heap served by its ticker (OnTick, on its own goroutine), which writes
// with AsyncWrite (queued to the loop, which it wakes); pongs are read in
// OnTraffic on the loop. A pong's time is taken from the moment OnTick
// asks for the ping, so the hop to the loop is part of it.

// gnetConn is one connection held through gnet.
type gnetConn struct {
	loopConn           // seq, sentAt, got; conn is the dialed Conn (the lease)
	gc       gnet.Conn // gnet's side, its own descriptor
	closed   bool      // by this side (timeout, end of run), not to be counted again
}

type gnetClient struct {
	gnet.BuiltinEventEngine
	o       clientOpts
	s       *clientStats
	mu      sync.Mutex
	conns   map[gnet.Conn]*gnetConn
	timers  timerHeap // loopTimer.c is the gnetConn's loopConn
	byLoop  map[*loopConn]*gnetConn
	seq     uint32
	pending int // pings awaiting their pong
	stopped bool
	ramping bool // new connections come: OnTick looks every 10 ms
}

// OnTraffic reads pongs on gnet's loop.
func (g *gnetClient) OnTraffic(gc gnet.Conn) gnet.Action {
	buf, _ := gc.Next(-1)
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	c := g.conns[gc]
	if c == nil || c.closed {
		return gnet.None
	}
	if c.seq == 0 || c.got+len(buf) > len(pong) || string(buf) != string(pong[c.got:c.got+len(buf)]) {
		g.drop(c, fmt.Sprintf("pong: unexpected %q", buf))
		return gnet.Close
	}
	if c.got += len(buf); c.got < len(pong) {
		return gnet.None
	}
	g.s.pong(c.sentAt, now)
	c.seq, c.got = 0, 0
	g.pending--
	g.timers.push(loopTimer{at: now.Add(g.o.interval), c: &c.loopConn})
	return gnet.None
}

// OnClose counts a connection the peer ended (EOF, reset) and closes the
// dialed Conn, ending its lease after gnet's descriptor is gone.
func (g *gnetClient) OnClose(gc gnet.Conn, err error) gnet.Action {
	g.mu.Lock()
	c := g.conns[gc]
	if c != nil && !c.closed {
		why := "pong: EOF"
		if err != nil {
			why = "pong: " + reason(err)
		}
		g.drop(c, why)
	}
	delete(g.conns, gc)
	g.mu.Unlock()
	if c != nil {
		c.conn.Close()
	}
	return gnet.None
}

// drop marks c closed by this side, counting why (nothing if empty); the
// caller closes gnet's side.
func (g *gnetClient) drop(c *gnetConn, why string) {
	if why != "" {
		g.s.fail(why)
	}
	if c.seq != 0 {
		g.pending--
		c.seq = 0
	}
	c.closed = true
	delete(g.byLoop, &c.loopConn)
	g.s.open.Add(-1)
}

// OnTick sends the pings due and drops connections whose pong is late;
// it returns the time to the next timer, at least o.tick after this batch.
func (g *gnetClient) OnTick() (time.Duration, gnet.Action) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	for len(g.timers) > 0 && !g.timers[0].at.After(now) {
		t := g.timers.pop()
		c := g.byLoop[t.c]
		if c == nil {
			continue
		}
		if t.pong {
			if c.seq == t.seq {
				g.s.timeouts.Add(1)
				g.drop(c, "pong: timeout")
				c.gc.Close()
			}
			continue
		}
		if g.stopped {
			continue
		}
		if g.seq++; g.seq == 0 {
			g.seq = 1
		}
		c.seq, c.got, c.sentAt = g.seq, 0, now
		if err := c.gc.AsyncWrite(ping, nil); err != nil {
			c.seq = 0
			g.drop(c, "ping: "+reason(err))
			c.gc.Close()
			continue
		}
		g.s.pings.Add(1)
		g.pending++
		g.timers.push(loopTimer{at: now.Add(g.o.timeout), c: t.c, seq: c.seq, pong: true})
	}
	wait := time.Second
	if len(g.timers) > 0 {
		wait = time.Until(later(g.timers[0].at, now.Add(max(g.o.tick, time.Millisecond))))
	}
	if g.ramping {
		wait = min(wait, 10*time.Millisecond)
	}
	return max(wait, 0), gnet.None
}

// enroll hands the dialed Conn c to gnet through a *net.TCPConn made from
// a duplicate of its descriptor, and keeps c (out of the runtime's poller)
// for its lease.
func (g *gnetClient) enroll(cli *gnet.Client, c net.Conn) error {
	fd, err := takeOver(c)
	if err != nil {
		return err
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(dup), "connscale")
	tc, err := net.FileConn(f) // its own duplicate; Enroll duplicates again and closes tc
	f.Close()
	if err != nil {
		return err
	}
	// OnOpen registers it, on gnet's loop, before any OnTraffic for it.
	if _, err := cli.EnrollContext(tc, &gnetConn{loopConn: loopConn{conn: c}}); err != nil {
		return err
	}
	return nil
}

// OnOpen registers an enrolled connection and schedules its first ping at
// a random point of the interval.
func (g *gnetClient) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	c := gc.Context().(*gnetConn)
	c.gc, c.fd = gc, gc.Fd()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.conns[gc] = c
	g.byLoop[&c.loopConn] = c
	g.s.established.Add(1)
	g.s.open.Add(1)
	g.timers.push(loopTimer{at: time.Now().Add(time.Duration(rand.Int64N(int64(g.o.interval)))), c: &c.loopConn})
	return nil, gnet.None
}

// runGnetClient is runLoopClient with gnet holding the connections.
func runGnetClient(ctx context.Context, d *client.Dialer, o clientOpts, s *clientStats, rampDone chan<- struct{}) error {
	g := &gnetClient{o: o, s: s, ramping: true, conns: map[gnet.Conn]*gnetConn{}, byLoop: map[*loopConn]*gnetConn{}}
	cli, err := gnet.NewClient(g, gnet.WithTicker(true), gnet.WithMulticore(false), gnet.WithLogLevel(4) /* errors only */)
	if err != nil {
		return err
	}
	if err := cli.Start(); err != nil {
		return err
	}
	go func() {
		defer close(rampDone)
		rampDial(ctx, d, o, s, func(c net.Conn) {
			if err := g.enroll(cli, c); err != nil {
				c.Close()
				s.fail("enroll: " + reason(err))
			}
		})
		g.mu.Lock()
		g.ramping = false
		g.mu.Unlock()
	}()
	<-ctx.Done()
	// The end: no new ping; the pongs in flight are waited for, up to the
	// timeout; then every connection is reset (no TIME_WAIT left).
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
	for end := time.Now().Add(o.timeout); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		g.mu.Lock()
		p := g.pending
		g.mu.Unlock()
		if p <= 0 {
			break
		}
	}
	g.mu.Lock()
	var all []*gnetConn
	for _, c := range g.conns {
		if !c.closed {
			unix.SetsockoptLinger(c.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
			g.drop(c, "")
			all = append(all, c)
		}
	}
	g.mu.Unlock()
	for _, c := range all {
		c.gc.Close()
	}
	// Stop closes what is left and returns after OnClose ran for each.
	if err := cli.Stop(); err != nil && !errors.Is(err, syscall.EBADF) {
		return err
	}
	return nil
}
