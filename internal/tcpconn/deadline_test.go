package tcpconn

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := New(sc.(*net.TCPConn), &Counters{}, nil)
	t.Cleanup(func() { c.Close(); cc.Close() })
	return c, cc
}

// readTimes blocks in Read and reports when it returned and with what.
func readTimes(c net.Conn) (time.Duration, int, error) {
	start := time.Now()
	n, err := c.Read(make([]byte, 16))
	return time.Since(start), n, err
}

func TestLazyDeadlines(t *testing.T) {
	t.Run("extended", func(t *testing.T) {
		c, _ := pair(t)
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond)) // reaches the timer
		c.SetReadDeadline(time.Now().Add(400 * time.Millisecond)) // kept lazily
		d, _, err := readTimes(c)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read: %v, want a timeout", err)
		}
		if d < 380*time.Millisecond || d > 2*time.Second {
			t.Fatalf("timed out after %v; the deadline was 400 ms", d)
		}
	})
	t.Run("moved earlier", func(t *testing.T) {
		c, _ := pair(t)
		c.SetReadDeadline(time.Now().Add(time.Hour))
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		d, _, err := readTimes(c)
		if !errors.Is(err, os.ErrDeadlineExceeded) || d < 90*time.Millisecond || d > time.Second {
			t.Fatalf("read: %v after %v, want a timeout at 100 ms", err, d)
		}
	})
	t.Run("cleared", func(t *testing.T) {
		c, cc := pair(t)
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		c.SetReadDeadline(time.Time{})
		go func() { time.Sleep(300 * time.Millisecond); cc.Write([]byte("late")) }()
		d, n, err := readTimes(c)
		if err != nil || n != 4 || d < 250*time.Millisecond {
			t.Fatalf("read after clearing the deadline: %d, %v after %v", n, err, d)
		}
	})
	t.Run("past interrupts", func(t *testing.T) {
		c, _ := pair(t)
		c.SetReadDeadline(time.Now().Add(time.Hour))
		go func() { time.Sleep(100 * time.Millisecond); c.SetReadDeadline(time.Now().Add(-time.Second)) }()
		d, _, err := readTimes(c)
		if !errors.Is(err, os.ErrDeadlineExceeded) || d > time.Second {
			t.Fatalf("read: %v after %v, want an interruption", err, d)
		}
	})
	t.Run("write", func(t *testing.T) {
		c, _ := pair(t) // the peer never reads: the write blocks once buffers fill
		c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		c.SetWriteDeadline(time.Now().Add(400 * time.Millisecond))
		start := time.Now()
		n, err := c.Write(make([]byte, 64<<20))
		d := time.Since(start)
		if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || d < 380*time.Millisecond || d > 3*time.Second {
			t.Fatalf("write: %d bytes, %v after %v; want a partial write timing out at 400 ms", n, err, d)
		}
	})
}

// BenchmarkDeadlines is what fasthttp's server does per request with its
// timeouts on: idle, read and write deadlines, each later than the last.
func BenchmarkDeadlines(b *testing.B) {
	for _, lazy := range []bool{false, true} {
		name := "TCPConn"
		if lazy {
			name = "Conn"
		}
		b.Run(name, func(b *testing.B) {
			ln, _ := net.Listen("tcp4", "127.0.0.1:0")
			defer ln.Close()
			cc, _ := net.Dial("tcp4", ln.Addr().String())
			defer cc.Close()
			sc, _ := ln.Accept()
			defer sc.Close()
			var c net.Conn = sc
			if lazy {
				c = New(sc.(*net.TCPConn), &Counters{}, nil)
			}
			b.ReportAllocs()
			for b.Loop() {
				now := time.Now()
				c.SetReadDeadline(now.Add(time.Minute))
				c.SetReadDeadline(now.Add(30 * time.Second))
				c.SetWriteDeadline(now.Add(30 * time.Second))
			}
		})
	}
}
