package client

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/connopt/connopt/internal/testkit"
)

// FuzzResolve feeds arbitrary addresses to the resolver of a dialer that
// works in another namespace, so that no name is ever looked up: literals
// resolve to a non-zero port, anything else is refused with an error.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"127.0.0.1:80", "[::1]:443", "[fe80::1%eth0]:8080", "localhost:80", "1.2.3.4", ":80", "1.2.3.4:0", "1.2.3.4:99999", "[::ffff:1.2.3.4]:5"} {
		f.Add("tcp", s)
	}
	d := &Dialer{cfg: Config{Namespace: "fuzz"}}
	f.Fuzz(func(t *testing.T, network, addr string) {
		aps, err := d.resolve(context.Background(), network, addr)
		if err != nil {
			return
		}
		if len(aps) != 1 {
			t.Fatalf("resolve(%q, %q) = %v, want one literal", network, addr, aps)
		}
		if ap := aps[0]; !ap.IsValid() || ap.Port() == 0 || ap.Addr().Is4In6() {
			t.Fatalf("resolve(%q, %q) = %v", network, addr, ap)
		}
	})
}

// A stream of distinct names leaves at most maxDNSEntries in the cache, and
// a name looked up again while cached costs no lookup.
func TestDNSCacheBounded(t *testing.T) {
	var lookups atomic.Int64
	c := &dnsCache{ttl: time.Hour, lookupNetIP: func(context.Context, string, string) ([]netip.Addr, error) {
		lookups.Add(1)
		return []netip.Addr{netip.MustParseAddr("192.0.2.1")}, nil
	}}
	const names = 10 * maxDNSEntries
	for i := range names {
		if _, err := c.lookup(context.Background(), "tcp", fmt.Sprintf("host-%d.example", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.entries); n > maxDNSEntries {
		t.Fatalf("%d names looked up once each: %d cached, want at most %d", names, n, maxDNSEntries)
	}
	last := fmt.Sprintf("host-%d.example", names-1)
	before := lookups.Load()
	if _, err := c.lookup(context.Background(), "tcp", last); err != nil || lookups.Load() != before {
		t.Fatalf("the newest name was looked up again (%v)", err)
	}
}

// When an entry expires, one caller resolves the name again and the others
// use the old addresses meanwhile, without waiting for it.
func TestDNSCacheOneRefresh(t *testing.T) {
	var lookups atomic.Int64
	release := make(chan struct{})
	old, fresh := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	c := &dnsCache{ttl: time.Hour, lookupNetIP: func(context.Context, string, string) ([]netip.Addr, error) {
		if lookups.Add(1) == 1 {
			return []netip.Addr{old}, nil
		}
		<-release
		return []netip.Addr{fresh}, nil
	}}
	if _, err := c.lookup(context.Background(), "tcp", "busy.example"); err != nil {
		t.Fatal(err)
	}
	c.entries["tcp/busy.example"].expires = time.Now().Add(-time.Second)
	const callers = 50
	var wg sync.WaitGroup
	refreshed := make(chan []netip.Addr, callers)
	var stale atomic.Int64
	for range callers {
		wg.Go(func() {
			addrs, err := c.lookup(context.Background(), "tcp", "busy.example")
			switch {
			case err != nil:
				t.Error(err)
			case addrs[0] == old:
				stale.Add(1)
			default:
				refreshed <- addrs
			}
		})
	}
	testkit.Eventually(t, "the others to use the old answer", func() bool { return stale.Load() == callers-1 })
	close(release)
	wg.Wait()
	if n := lookups.Load() - 1; n != 1 {
		t.Fatalf("%d callers of an expired name: %d lookups, want 1", callers, n)
	}
	if got := <-refreshed; got[0] != fresh {
		t.Fatalf("the refreshing caller got %v", got)
	}
	if addrs, _ := c.lookup(context.Background(), "tcp", "busy.example"); addrs[0] != fresh || lookups.Load() != 2 {
		t.Fatalf("after the refresh: %v, %d lookups", addrs, lookups.Load())
	}
}
