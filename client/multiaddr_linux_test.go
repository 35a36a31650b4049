package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// fakeNames makes d resolve names from a table, the way /etc/hosts would.
func fakeNames(d *Dialer, table map[string][]netip.Addr) {
	d.dns.lookupNetIP = func(_ context.Context, network, host string) ([]netip.Addr, error) {
		var out []netip.Addr
		for _, ip := range table[host] {
			if network == "ip" || network == "ip4" && ip.Is4() || network == "ip6" && ip.Is6() {
				out = append(out, ip)
			}
		}
		if len(out) == 0 {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return out, nil
	}
}

// A name with several addresses, some of which refuse: every request
// succeeds, as with stock fasthttp (the control), and an address that
// failed is not tried first again.
func TestNameWithSeveralAddresses(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upstream(t, ln, hello, 0)
	port := ln.Addr().(*net.TCPAddr).Port
	// Nothing listens on 127.0.0.2 or ::1 at that port.
	table := map[string][]netip.Addr{
		"localhost":  {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
		"v6first":    {netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1")},
		"onedead":    {netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")},
		"alldead":    {netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")},
		"deadfamily": {netip.MustParseAddr("::1")},
	}
	for _, name := range []string{"localhost", "v6first", "onedead"} {
		t.Run(name, func(t *testing.T) {
			d := newDialer(t, Config{})
			fakeNames(d, table)
			hc := d.HostClient(fmt.Sprintf("%s:%d", name, port))
			hc.MaxConns = 1
			defer hc.CloseIdleConnections()
			for i := range 100 {
				status, _, err := hc.GetTimeout(nil, "http://"+name+"/", 5*time.Second)
				if err != nil || status != 200 {
					t.Fatalf("request %d: %d %v", i, status, err)
				}
				hc.CloseIdleConnections() // every request dials
			}
			s := d.Stats()
			if s.DialErrors["refused"] > 1 {
				t.Fatalf("the refusing address was tried %d times in 100 dials; it should be tried last once it failed", s.DialErrors["refused"])
			}
		})
	}
	t.Run("all dead", func(t *testing.T) {
		d := newDialer(t, Config{})
		fakeNames(d, table)
		_, err := d.Dial(fmt.Sprintf("alldead:%d", port))
		var oe *net.OpError
		if !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &oe) || oe.Op != "dial" || oe.Addr == nil {
			t.Fatalf("all addresses refusing: %v, want a dial *net.OpError naming the first address, matching ECONNREFUSED", err)
		}
	})

	// The control: stock fasthttp against the real resolver's localhost.
	stock := &fasthttp.HostClient{Addr: fmt.Sprintf("localhost:%d", port)}
	d := newDialer(t, Config{})
	ours := d.HostClient(fmt.Sprintf("localhost:%d", port))
	for _, hc := range []*fasthttp.HostClient{stock, ours} {
		fails := 0
		for range 20 {
			if status, _, err := hc.GetTimeout(nil, "http://localhost/", 5*time.Second); err != nil || status != 200 {
				fails++
			}
			hc.CloseIdleConnections()
		}
		if fails != 0 {
			t.Errorf("localhost from this machine's resolver: %d of 20 failed", fails)
		}
	}
}

// Happy Eyeballs: when the first family does not answer, the other one is
// started after the fallback delay, and the dial succeeds in about that
// time rather than after the whole connect timeout.
func TestHappyEyeballsFallback(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	d := newDialer(t, Config{})
	fakeNames(d, map[string][]netip.Addr{"slow6": {netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.1")}})
	// ::1 refuses at once: the fallback starts without waiting the delay.
	start := time.Now()
	c, err := d.Dial(fmt.Sprintf("slow6:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if el := time.Since(start); el > DefaultFallbackDelay {
		t.Fatalf("dial took %v; a refusing primary should start the fallback at once", el)
	}
	if got := c.RemoteAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.1" {
		t.Fatalf("connected to %s", got)
	}
}

// A dial with a context already cancelled or expired fails every time, with
// net.Dialer's error (the control).
func TestDialDoneContext(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // a dial that wrongly succeeded waits in the backlog
	d := newDialer(t, Config{})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	var stock net.Dialer
	for _, tc := range []struct {
		name string
		ctx  context.Context
		is   error
	}{{"cancelled", cancelled, context.Canceled}, {"expired", expired, context.DeadlineExceeded}} {
		_, want := stock.DialContext(tc.ctx, "tcp", ln.Addr().String())
		for i := range 50 {
			c, err := d.DialContext(tc.ctx, "tcp", ln.Addr().String())
			if err == nil {
				c.Close()
				t.Fatalf("%s: dial %d succeeded", tc.name, i)
			}
			var oe *net.OpError
			if !errors.Is(err, tc.is) || !errors.As(err, &oe) || err.Error() != want.Error() {
				t.Fatalf("%s: %q (%T), stock %q", tc.name, err, err, want)
			}
		}
	}
}
