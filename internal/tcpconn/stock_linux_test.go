package tcpconn

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/rawsock"
)

// Every test here runs one scenario through the standard *net.TCPConn (the
// control) and through both connopt connection types, and compares what a
// user sees.

type kind struct {
	name string
	// wrap turns the dialed *net.TCPConn into the connection under test.
	dial func(t *testing.T, addr netip.AddrPort) net.Conn
}

func kinds() []kind {
	return []kind{
		{"stock", func(t *testing.T, addr netip.AddrPort) net.Conn { return dialTCP(t, addr) }},
		{"Conn", func(t *testing.T, addr netip.AddrPort) net.Conn { return New(dialTCP(t, addr), &Counters{}, nil) }},
		{"FileConn", dialFile},
	}
}

func dialTCP(t *testing.T, addr netip.AddrPort) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp4", nil, net.TCPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dialFile connects as the client package's dialer does.
func dialFile(t *testing.T, addr netip.AddrPort) net.Conn {
	t.Helper()
	fd, err := rawsock.NewTCPSocket(false, rawsock.Options{NoDelay: true})
	if err != nil {
		t.Fatal(err)
	}
	f, err := rawsock.Connect(context.Background(), fd, addr)
	if err != nil {
		t.Fatal(err)
	}
	return NewFile(f, "tcp4", net.TCPAddrFromAddrPort(addr), nil, &Counters{}, nil, true)
}

// stockPair returns the connection under test and the stock peer it is
// connected to; both are closed at the end of the test.
func stockPair(t *testing.T, k kind) (net.Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := k.dial(t, ln.Addr().(*net.TCPAddr).AddrPort())
	peer, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

func eachKind(t *testing.T, f func(t *testing.T, k kind)) {
	for _, k := range kinds() {
		t.Run(k.name, func(t *testing.T) { f(t, k) })
	}
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

// drainAfter reads everything from c after a pause, returning the bytes'
// count and checksum.
func drainAfter(c net.Conn, pause time.Duration) chan [2]any {
	out := make(chan [2]any, 1)
	go func() {
		time.Sleep(pause)
		h := sha256.New()
		n, err := io.Copy(h, c)
		out <- [2]any{n, fmt.Sprintf("%x %v", h.Sum(nil), err)}
	}()
	return out
}

func sum(b []byte) string { return fmt.Sprintf("%x <nil>", sha256.Sum256(b)) }

// Issue 13, item 1: a write deadline kept lazily on the socket must not
// fire inside ReadFrom, whose copy has taken bytes it has not written yet.
func TestReadFromLosesNothing(t *testing.T) {
	const size = 16 << 20
	data := pattern(size)
	path := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sources := map[string]func(t *testing.T) io.Reader{
		"generic": func(*testing.T) io.Reader { return struct{ io.Reader }{bytes.NewReader(data)} },
		"sendfile": func(t *testing.T) io.Reader {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return f
		},
		"splice": func(t *testing.T) io.Reader {
			src, feed := stockPair(t, kinds()[0])
			go func() { feed.Write(data); feed.CloseWrite() }()
			return src
		},
	}
	for name, src := range sources {
		t.Run(name, func(t *testing.T) {
			eachKind(t, func(t *testing.T, k kind) {
				c, peer := stockPair(t, k)
				// An early deadline reaches the socket, a later one is
				// kept lazily by connopt; the peer reads only after the
				// early one has passed.
				c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				c.SetWriteDeadline(time.Now().Add(20 * time.Second))
				got := drainAfter(peer, 300*time.Millisecond)
				n, err := c.(io.ReaderFrom).ReadFrom(src(t))
				c.Close()
				if n != size || err != nil {
					t.Fatalf("ReadFrom: %d, %v; want %d, nil", n, err, size)
				}
				if r := <-got; r[0].(int64) != size || r[1].(string) != sum(data) {
					t.Fatalf("peer received %v bytes (%v), want %d with the source's checksum", r[0], r[1], size)
				}
			})
		})
	}
}

// Issue 13, item 2: when the other side of a copy times out, the copy
// returns that timeout at once (it used to be taken as this connection's
// own, re-armed and retried forever).
func TestCopyReturnsTheOtherSidesTimeout(t *testing.T) {
	t.Run("ReadFrom", func(t *testing.T) {
		texts := map[string]string{}
		eachKind(t, func(t *testing.T, k kind) {
			c, _ := stockPair(t, k)
			c.SetWriteDeadline(time.Now().Add(time.Hour))
			up, _ := stockPair(t, kinds()[0])
			up.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
			start := time.Now()
			_, err := io.Copy(c, up)
			d := time.Since(start)
			if !errors.Is(err, os.ErrDeadlineExceeded) || d < 140*time.Millisecond || d > 2*time.Second {
				t.Fatalf("io.Copy(conn, upstream) returned %v after %v; want the upstream's timeout at 150 ms", err, d)
			}
			texts[k.name] = strings.NewReplacer(c.LocalAddr().String(), "L", c.RemoteAddr().String(), "R",
				up.LocalAddr().String(), "UL", up.RemoteAddr().String(), "UR").Replace(err.Error())
		})
		for name, got := range texts {
			if got != texts["stock"] {
				t.Errorf("%s: %q, stock %q", name, got, texts["stock"])
			}
		}
	})
	t.Run("WriteTo", func(t *testing.T) {
		eachKind(t, func(t *testing.T, k kind) {
			c, peer := stockPair(t, k)
			c.SetReadDeadline(time.Now().Add(time.Hour))
			go peer.Write(pattern(32 << 20))
			dst, _ := stockPair(t, kinds()[0]) // its peer never reads
			dst.SetWriteDeadline(time.Now().Add(150 * time.Millisecond))
			start := time.Now()
			_, err := io.Copy(dst, c)
			d := time.Since(start)
			if !errors.Is(err, os.ErrDeadlineExceeded) || d < 140*time.Millisecond || d > 2*time.Second {
				t.Fatalf("io.Copy(downstream, conn) returned %v after %v; want the downstream's timeout at 150 ms", err, d)
			}
		})
	})
}

// Issue 13, item 3: WriteTo and net.Buffers keep the deadline last set.
func TestEveryPathKeepsTheDeadline(t *testing.T) {
	t.Run("WriteTo", func(t *testing.T) {
		eachKind(t, func(t *testing.T, k kind) {
			c, peer := stockPair(t, k)
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			go func() {
				time.Sleep(300 * time.Millisecond)
				peer.Write([]byte("late but in time"))
				peer.CloseWrite()
			}()
			var buf bytes.Buffer
			n, err := c.(io.WriterTo).WriteTo(&buf)
			if err != nil || n != 16 || buf.String() != "late but in time" {
				t.Fatalf("WriteTo: %d, %v, %q", n, err, buf.String())
			}
		})
	})
	t.Run("net.Buffers", func(t *testing.T) {
		eachKind(t, func(t *testing.T, k kind) {
			c, peer := stockPair(t, k)
			c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			data := pattern(16 << 20)
			got := drainAfter(peer, 300*time.Millisecond)
			bufs := net.Buffers{data[:1<<20], data[1<<20 : 9<<20], data[9<<20:]}
			n, err := bufs.WriteTo(c)
			c.Close()
			if n != int64(len(data)) || err != nil {
				t.Fatalf("net.Buffers.WriteTo: %d, %v", n, err)
			}
			if r := <-got; r[1].(string) != sum(data) {
				t.Fatalf("peer received %v bytes (%v)", r[0], r[1])
			}
		})
	})
	t.Run("peer closed", func(t *testing.T) {
		eachKind(t, func(t *testing.T, k kind) {
			c, peer := stockPair(t, k)
			peer.SetLinger(0)
			peer.Close()
			time.Sleep(50 * time.Millisecond)
			var err error
			for range 100 {
				bufs := net.Buffers{make([]byte, 1024), make([]byte, 1024)}
				if _, err = bufs.WriteTo(c); err != nil {
					break
				}
			}
			if !IsPeerClosed(err) {
				t.Fatalf("net.Buffers to a reset peer: %v", err)
			}
			if _, wrapped := c.(*net.TCPConn); !wrapped && !errors.Is(err, ErrPeerClosed) {
				t.Fatalf("net.Buffers error %v does not match ErrPeerClosed", err)
			}
		})
	})
}

// Issue 13, item 4: deadlines far in the future never fire, and are not
// read from the wall clock's nanoseconds.
func TestFarFutureDeadlines(t *testing.T) {
	for _, d := range []struct {
		name string
		t    func() time.Time
	}{
		{"now+MaxInt64", func() time.Time { return time.Now().Add(math.MaxInt64) }},
		{"year 9999", func() time.Time { return time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC) }},
		{"year 2300 after an earlier one", func() time.Time { return time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }},
	} {
		t.Run(d.name, func(t *testing.T) {
			eachKind(t, func(t *testing.T, k kind) {
				c, peer := stockPair(t, k)
				c.SetReadDeadline(time.Now().Add(time.Minute))
				if err := c.SetReadDeadline(d.t()); err != nil {
					t.Fatal(err)
				}
				c.SetWriteDeadline(d.t())
				go func() { time.Sleep(200 * time.Millisecond); peer.Write([]byte("ok")) }()
				b := make([]byte, 2)
				if _, err := io.ReadFull(c, b); err != nil {
					t.Fatalf("read with a deadline in %v: %v", d.t().Year(), err)
				}
				if _, err := c.Write(b); err != nil {
					t.Fatalf("write with a deadline in %v: %v", d.t().Year(), err)
				}
			})
		})
	}
}

// Issue 13, item 5: net/http's hijack sets a past deadline, then clears it.
// The cleared deadline must not fire.
func TestPastThenCleared(t *testing.T) {
	eachKind(t, func(t *testing.T, k kind) {
		c, peer := stockPair(t, k)
		c.SetReadDeadline(time.Now().Add(time.Hour))
		c.SetReadDeadline(time.Unix(1, 0)) // aLongTimeAgo
		c.SetReadDeadline(time.Time{})
		go func() { time.Sleep(100 * time.Millisecond); peer.Write([]byte("x")) }()
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatalf("read after a cleared deadline: %v", err)
		}
		// The same through io.Copy (WriteTo).
		c.SetReadDeadline(time.Unix(1, 0))
		c.SetReadDeadline(time.Time{})
		go func() { time.Sleep(100 * time.Millisecond); peer.Write([]byte("tunnel")); peer.CloseWrite() }()
		var buf bytes.Buffer
		if n, err := io.Copy(&buf, c); err != nil || n != 6 {
			t.Fatalf("io.Copy after a cleared deadline: %d, %v", n, err)
		}
	})
}

// Issue 13, item 6: after Close, deadline setters and the other methods
// fail as the standard library's do, with the same text.
func TestAfterClose(t *testing.T) {
	texts := map[string][]string{}
	eachKind(t, func(t *testing.T, k kind) {
		c, _ := stockPair(t, k)
		la, ra := c.LocalAddr().String(), c.RemoteAddr().String()
		c.Close()
		var got []string
		for _, f := range []struct {
			op string
			fn func() error
		}{
			{"set", func() error { return c.SetReadDeadline(time.Now()) }},
			{"set", func() error { return c.SetWriteDeadline(time.Now()) }},
			{"set", func() error { return c.SetDeadline(time.Time{}) }},
			{"read", func() error { _, err := c.Read(make([]byte, 1)); return err }},
			{"write", func() error { _, err := c.Write([]byte("x")); return err }},
			{"close", func() error { return c.(interface{ CloseWrite() error }).CloseWrite() }},
			{"set", func() error { return c.(interface{ SetLinger(int) error }).SetLinger(0) }},
		} {
			err := f.fn()
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("%s after Close: %v, want net.ErrClosed", f.op, err)
			}
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != f.op || !strings.Contains(err.Error(), la) {
				t.Fatalf("%s after Close: %q (%T), want a *net.OpError %q naming %s", f.op, err, err, f.op, la)
			}
			got = append(got, strings.NewReplacer(la, "LADDR", ra, "RADDR").Replace(err.Error()))
		}
		texts[k.name] = got
	})
	for name, got := range texts {
		if fmt.Sprint(got) != fmt.Sprint(texts["stock"]) {
			t.Errorf("%s: after-Close errors %q\nstock: %q", name, got, texts["stock"])
		}
	}
}

// Errors while open name both addresses, as net's do, whether or not
// LocalAddr was called.
func TestErrorTextsWhileOpen(t *testing.T) {
	texts := map[string]string{}
	eachKind(t, func(t *testing.T, k kind) {
		c, peer := stockPair(t, k)
		peer.SetLinger(0)
		peer.Close()
		time.Sleep(50 * time.Millisecond)
		_, err := c.Read(make([]byte, 1))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read after RST: %v", err)
		}
		texts[k.name] = strings.Replace(err.Error(), fmt.Sprintf("%s->%s", c.LocalAddr(), c.RemoteAddr()), "ADDRS", 1)
	})
	for name, got := range texts {
		if got != texts["stock"] {
			t.Errorf("%s: %q, stock %q", name, got, texts["stock"])
		}
	}
}

// The stress test of the done-when list: deadline setters on several
// goroutines while Read, Write, ReadFrom and WriteTo move data both ways;
// every byte is checked at the other end, and no deadline the setters chose
// (all at least a second away, or none) may fire.
func TestDeadlineStress(t *testing.T) {
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	eachKind(t, func(t *testing.T, k kind) {
		for round := range 3 {
			stressRound(t, k, int64(round))
		}
	})
	leakcheck.Settle(t, fds, gs)
}

func stressRound(t *testing.T, k kind, seed int64) {
	c, peer := stockPair(t, k)
	out := pattern(6<<20 + int(seed))
	back := pattern(5<<20 + 3*int(seed))

	stop := make(chan struct{})
	var setters sync.WaitGroup
	for g := range 4 {
		setters.Add(1)
		go func() {
			defer setters.Done()
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(g)))
			for {
				select {
				case <-stop:
					return
				default:
				}
				var d time.Time
				if rng.IntN(8) != 0 {
					d = time.Now().Add(time.Second + time.Duration(rng.IntN(4000))*time.Millisecond)
				}
				switch rng.IntN(3) {
				case 0:
					c.SetReadDeadline(d)
				case 1:
					c.SetWriteDeadline(d)
				default:
					c.SetDeadline(d)
				}
				time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
			}
		}()
	}

	// The peer checks what c writes and sends back its own stream slowly
	// enough that c's reads block.
	peerGot := make(chan string, 1)
	go func() {
		h := sha256.New()
		io.Copy(h, peer)
		peerGot <- fmt.Sprintf("%x", h.Sum(nil))
	}()
	go func() {
		for off := 0; off < len(back); off += 64 << 10 {
			peer.Write(back[off:min(off+64<<10, len(back))])
			if off%(1<<20) == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		peer.CloseWrite()
	}()

	writeErr := make(chan error, 1)
	go func() {
		rc := c.(io.ReaderFrom)
		var err error
		for off, i := 0, 0; off < len(out) && err == nil; i++ {
			end := min(off+256<<10, len(out))
			switch i % 3 {
			case 0:
				_, err = c.Write(out[off:end])
			case 1:
				_, err = rc.ReadFrom(struct{ io.Reader }{bytes.NewReader(out[off:end])})
			default:
				_, err = (&net.Buffers{out[off:end]}).WriteTo(c)
			}
			off = end
		}
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		writeErr <- err
	}()

	// Half read with Read, the rest with WriteTo.
	h := sha256.New()
	first := make([]byte, len(back)/2)
	_, rerr := io.ReadFull(c, first)
	h.Write(first)
	if rerr == nil {
		_, rerr = c.(io.WriterTo).WriteTo(h)
	}
	close(stop)
	setters.Wait()
	if rerr != nil {
		t.Fatalf("reading: %v", rerr)
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("writing: %v", err)
	}
	if got, want := fmt.Sprintf("%x", h.Sum(nil)), fmt.Sprintf("%x", sha256.Sum256(back)); got != want {
		t.Fatalf("read stream checksum differs")
	}
	if got, want := <-peerGot, fmt.Sprintf("%x", sha256.Sum256(out)); got != want {
		t.Fatalf("written stream checksum differs")
	}
}
