package client_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"syscall"
	"testing"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/ports"
)

// Dial errors as net.Dialer gives them, with stock net as the control: the
// top-level error is a *net.OpError with the same Op, Net and text, and
// what it wraps matches the same targets (errno, net.UnknownNetworkError,
// *net.AddrError). Both connopt dialers are checked: client.Dialer and
// ports.Allocator.
func TestDialErrorsAsStock(t *testing.T) {
	closed, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()

	d, err := client.NewDialer(client.Config{PoolSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	a, err := ports.New(ports.Config{Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}})
	if err != nil {
		t.Fatal(err)
	}
	dialers := map[string]func(ctx context.Context, network, addr string) (net.Conn, error){
		"client.Dialer":   d.DialContext,
		"ports.Allocator": a.DialContext,
	}

	var unknown net.UnknownNetworkError
	var addrErr *net.AddrError
	for _, tc := range []struct {
		network, addr string
		match         func(error) bool
		ports         bool // ports.Allocator takes IP literals only, so some cases are the client's
	}{
		{"tcp", refused, func(e error) bool { return errors.Is(e, syscall.ECONNREFUSED) }, true},
		{"tcp", "[::1]:1", func(e error) bool { return errors.Is(e, syscall.ECONNREFUSED) }, true},
		{"tcp5", refused, func(e error) bool { return errors.As(e, &unknown) }, true},
		{"udp", refused, func(e error) bool { return false }, false}, // stock dials UDP; connopt does not
		{"tcp4", "[::1]:80", func(e error) bool { return errors.As(e, &addrErr) }, true},
		{"tcp6", "127.0.0.1:80", func(e error) bool { return errors.As(e, &addrErr) }, true},
		{"tcp", "127.0.0.1", func(e error) bool { return errors.As(e, &addrErr) }, false},
	} {
		_, stock := (&net.Dialer{}).DialContext(t.Context(), tc.network, tc.addr)
		for name, dial := range dialers {
			if name == "ports.Allocator" && !tc.ports {
				continue
			}
			c, err := dial(t.Context(), tc.network, tc.addr)
			if tc.network == "udp" {
				// Not a TCP network: net.UnknownNetworkError, as net.Listen
				// gives for "udp" in a stream listener.
				if c != nil || !errors.As(err, &unknown) {
					t.Errorf("%s udp: %v", name, err)
				}
				continue
			}
			if c != nil {
				c.Close()
			}
			var oe, soe *net.OpError
			if !errors.As(err, &oe) || !errors.As(stock, &soe) || reflect.TypeOf(err) != reflect.TypeOf(stock) {
				t.Errorf("%s %s %s: %T %v; stock %T %v", name, tc.network, tc.addr, err, err, stock, stock)
				continue
			}
			if oe.Op != soe.Op || oe.Net != soe.Net || err.Error() != stock.Error() {
				t.Errorf("%s %s %s:\n ours  %q\n stock %q", name, tc.network, tc.addr, err, stock)
			}
			if !tc.match(err) || !tc.match(stock) {
				t.Errorf("%s %s %s: %v does not match as stock's %v does", name, tc.network, tc.addr, err, stock)
			}
		}
	}
}
