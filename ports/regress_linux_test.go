package ports

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

// Kernel strategy, two sources, the first one full: every dial must try
// the second rather than retrying the first.
func TestKernelTriesEverySource(t *testing.T) {
	inNS(t, func() {
		a1, a2 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
		r := Range{kernelRange.Low + 100, kernelRange.Low + 101}
		full, err := New(Config{Strategy: Kernel, Range: r, Sources: []netip.Addr{a1}})
		if errors.Is(err, ErrKernelUnsupported) {
			t.Skipf("kernel lacks the options: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		dst := newSink(t, "127.0.0.1:5000").Addr()
		held, err := fill(full.Dial4, []string{dst}, 2)
		defer closeConns(held)
		if err != nil {
			t.Fatalf("filling the first source: %v", err)
		}
		a := newT(t, Config{Strategy: Kernel, Range: r, Sources: []netip.Addr{a1, a2}})
		cs, err := fill(a.Dial4, []string{dst}, 2)
		defer closeConns(cs)
		if err != nil {
			t.Fatalf("with the second source empty: %d connections, then %v", len(cs), err)
		}
		for _, c := range cs {
			if ip := c.LocalAddr().(*net.TCPAddr).IP.String(); ip != a2.String() {
				t.Fatalf("connection from %s, want the free source %s", ip, a2)
			}
		}
		if _, err := a.Dial4(dst); !errors.Is(err, ErrExhausted) {
			t.Fatalf("both sources full: %v, want ErrExhausted", err)
		}
	})
}

// A collided port waits in its own queue: with Aging shorter than the
// collision wait, a port our side closed is free again after its own
// aging, not after the collided port's.
func TestShortAgingAfterCollision(t *testing.T) {
	inNS(t, func() {
		dst := newSink(t, "127.0.0.1:5000").Addr()
		x := trackedRange.Low + 120
		holder, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", x))
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Close()
		src := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
		// The pool starts at a random port of the two: retry until the
		// collision comes first, the order that used to block.
		for try := range 50 {
			a, clock := newClocked(t, Config{Range: Range{x, x + 1}, Aging: 10 * time.Millisecond, Sources: src})
			c, err := a.Dial4(dst)
			if err != nil {
				t.Fatal(err)
			}
			if a.Stats().Collisions == 0 {
				closeConns([]net.Conn{c})
				continue
			}
			closeConns([]net.Conn{c}) // our side closes: x+1 ages 10 ms
			if st := a.Stats(); st.Aging != 2 {
				t.Fatalf("try %d: %d ports aging, want 2 (the collided one and ours)", try, st.Aging)
			}
			clock.advance(10 * time.Millisecond)
			if st := a.Stats(); st.Aging != 1 {
				t.Fatalf("after 10 ms: %d ports aging, want 1 (the collided one)", st.Aging)
			}
			c, err = a.Dial4(dst)
			if err != nil {
				t.Fatalf("after our port's 10 ms aging: %v", err)
			}
			closeConns([]net.Conn{c})
			return
		}
		t.Fatal("no dial met the held port first in 50 tries")
	})
}
