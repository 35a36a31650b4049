package reliability

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/testns"
	"github.com/connopt/connopt/ports"
)

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// veth joins namespaces a and b with a veth pair (named after tag and the
// test process), addresses addrA and addrB (prefix included), both ends up.
func veth(t *testing.T, tag string, a *testns.NS, addrA string, b *testns.NS, addrB string) {
	t.Helper()
	name := fmt.Sprintf("%s%d", tag, os.Getpid()%100000)
	ipCmd(t, "-n", a.Name, "link", "add", name+"a", "type", "veth", "peer", "name", name+"b", "netns", b.Name)
	ipCmd(t, "-n", a.Name, "addr", "add", addrA, "dev", name+"a")
	ipCmd(t, "-n", b.Name, "addr", "add", addrB, "dev", name+"b")
	ipCmd(t, "-n", a.Name, "link", "set", name+"a", "up")
	ipCmd(t, "-n", b.Name, "link", "set", name+"b", "up")
}

// An upstream that never answers: namespace B has the address but its
// route back to the client is a blackhole, so SYN-ACKs vanish and connect
// waits, as behind a firewall that drops. The dial times out within its
// timeout, names the cause, and returns its socket and port lease.
func TestBlackholedUpstream(t *testing.T) {
	a := testns.New(t, nil) // the client
	b := testns.New(t, nil) // the silent upstream
	veth(t, "bh", a, "198.18.7.1/24", b, "198.18.7.2/24")
	ipCmd(t, "-n", b.Name, "route", "add", "blackhole", "198.18.7.1/32")

	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()
	func() {
		alloc, err := ports.New(ports.Config{Range: ports.Range{Low: 40000, High: 40099}, Sources: []netip.Addr{netip.MustParseAddr("198.18.7.1")}})
		if err != nil {
			t.Fatal(err)
		}
		d, err := client.NewDialer(client.Config{Namespace: a.Name, Ports: alloc, ConnectTimeout: 300 * time.Millisecond, PoolSize: 4})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		for range 3 {
			start := time.Now()
			_, err := d.Dial("198.18.7.2:80")
			took := time.Since(start)
			var ne net.Error
			if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("dial to a blackholed upstream: %v, want a timeout", err)
			}
			if took < 250*time.Millisecond || took > 3*time.Second {
				t.Fatalf("the 300 ms connect timeout fired after %v", took)
			}
		}
		if s := d.Stats(); s.DialErrors["timeout"] != 3 {
			t.Fatalf("timeouts counted: %+v", s.DialErrors)
		}
		if s := alloc.Stats(); s.InUse != 0 {
			t.Fatalf("port leases held after failed dials: %d", s.InUse)
		}
	}()
	leakcheck.Settle(t, fds, gs)
}
