package reliability

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/internal/testns"
	"github.com/connopt/connopt/ports"
)

// 64 goroutines race for 50 source ports to one upstream, through the
// client's dialer, while something outside the allocator holds one of the
// 50: exactly 49 connect, the rest get ErrExhausted promptly, and after
// the connections close every lease is back.
func TestPortsExhaustedUnderConcurrency(t *testing.T) {
	ns := testns.New(t, map[string]string{"net.ipv4.ip_local_port_range": "40000 49999"})
	var up net.Listener
	var holder net.Listener
	ns.Do(t, func() {
		var err error
		if up, err = net.Listen("tcp4", "127.0.0.1:6000"); err != nil {
			t.Fatal(err)
		}
		// A socket outside the allocator holds 40007.
		if holder, err = net.Listen("tcp4", "127.0.0.1:40007"); err != nil {
			t.Fatal(err)
		}
	})
	defer up.Close()
	defer holder.Close()
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() { c.Read(make([]byte, 1)); c.Close() }()
		}
	}()

	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	var alloc *ports.Allocator
	func() {
		var err error
		alloc, err = ports.New(ports.Config{Range: ports.Range{Low: 40000, High: 40049},
			Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Aging: -1})
		if err != nil {
			t.Fatal(err)
		}
		d, err := client.NewDialer(client.Config{Namespace: ns.Name, Ports: alloc, PoolSize: 64})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		var mu sync.Mutex
		var conns []net.Conn
		var exhausted, other atomic.Int64
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				t0 := time.Now()
				c, err := d.Dial("127.0.0.1:6000")
				switch {
				case err == nil:
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				case errors.Is(err, ports.ErrExhausted):
					exhausted.Add(1)
					if time.Since(t0) > 2*time.Second {
						t.Errorf("ErrExhausted took %v", time.Since(t0))
					}
				default:
					other.Add(1)
					t.Errorf("dial: %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(conns) != 49 || exhausted.Load() != 15 || other.Load() != 0 {
			t.Fatalf("%d connected, %d exhausted, %d other; want 49, 15, 0", len(conns), exhausted.Load(), other.Load())
		}
		if s := alloc.Stats(); s.InUse != 49 || s.Collisions != 1 {
			t.Fatalf("allocator %+v, want 49 in use and the one collision", s)
		}
		for _, c := range conns {
			c.Close()
		}
	}()
	testkit.Eventually(t, "every lease back after closing", func() bool { return alloc.Stats().InUse == 0 })
	leakcheck.Settle(t, fds, gs)
}
