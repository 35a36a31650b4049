package sockopt_test

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/rawsock"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/internal/testns"
	"github.com/connopt/connopt/listener"
	"github.com/connopt/connopt/sockopt"
	"github.com/connopt/connopt/sockpool"
)

// tcpOptions reads back what a user of the socket would find: the options
// ReadOptions covers, buffers left out (autotuned sizes differ per socket).
func tcpOptions(t *testing.T, c syscall.Conn) rawsock.Options {
	t.Helper()
	o := testkit.SockOptions(t, c)
	return rawsock.Options{NoDelay: o.NoDelay, KeepAlive: o.KeepAlive, KeepIdle: o.KeepIdle, KeepInterval: o.KeepInterval, KeepCount: o.KeepCount}
}

// accepted returns the server side of a connection to ln, and the client
// side made by dial.
func accepted(t *testing.T, ln net.Listener, dial func(addr string) (net.Conn, error)) (server, client net.Conn) {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	c, s, err := testkit.Pair(ln, dial)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return s, c
}

// The same Options give the same socket whichever component makes it, and
// the zero Options give what package net gives: stock net.Listen and
// net.Dial are the control.
func TestSameOptionsEverywhere(t *testing.T) {
	stockLn, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stockS, stockC := accepted(t, stockLn, func(a string) (net.Conn, error) { return net.Dial("tcp4", a) })
	wantStock := tcpOptions(t, stockS.(syscall.Conn))
	if got := tcpOptions(t, stockC.(syscall.Conn)); got != wantStock {
		t.Fatalf("stock dialed %+v, accepted %+v", got, wantStock)
	}

	// The client leaves to the kernel what equals its defaults: a case
	// asking for exactly those must read back the same.
	kernel, err := rawsock.KernelKeepAlive()
	if err != nil {
		t.Fatal(err)
	}
	// In this namespace the kernel's defaults differ from every value
	// asked for: what a pool makes there must still read back as asked.
	ns := testns.New(t, map[string]string{"net.ipv4.tcp_keepalive_probes": "5", "net.ipv4.tcp_keepalive_time": "100", "net.ipv4.tcp_keepalive_intvl": "10"})

	for _, tc := range []struct {
		name string
		o    sockopt.Options
		want rawsock.Options
	}{
		{"zero", sockopt.Options{}, wantStock},
		{"kernel's", sockopt.Options{KeepAlive: kernel.KeepIdle, KeepAliveInterval: kernel.KeepInterval, KeepAliveCount: kernel.KeepCount},
			rawsock.Options{NoDelay: true, KeepAlive: true, KeepIdle: kernel.KeepIdle, KeepInterval: kernel.KeepInterval, KeepCount: kernel.KeepCount}},
		{"custom", sockopt.Options{KeepAlive: 7 * time.Second, KeepAliveInterval: 3 * time.Second, KeepAliveCount: 4},
			rawsock.Options{NoDelay: true, KeepAlive: true, KeepIdle: 7 * time.Second, KeepInterval: 3 * time.Second, KeepCount: 4}},
		{"Nagle", sockopt.Options{Nagle: true}, rawsock.Options{NoDelay: false, KeepAlive: true,
			KeepIdle: sockopt.DefaultKeepAlive, KeepInterval: sockopt.DefaultKeepAliveInterval, KeepCount: sockopt.DefaultKeepAliveCount}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := listener.Listen("tcp4", "127.0.0.1:0", listener.Config{Options: tc.o})
			if err != nil {
				t.Fatal(err)
			}
			d, err := client.NewDialer(client.Config{Options: tc.o, PoolSize: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			s, c := accepted(t, ln, func(a string) (net.Conn, error) { return d.DialContext(t.Context(), "tcp4", a) })
			p, err := sockpool.New(sockpool.Config{Options: tc.o, Size: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			ps, err := p.Get(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			fd, err := ps.Detach()
			if err != nil {
				t.Fatal(err)
			}
			f := os.NewFile(uintptr(fd), "pooled")
			defer f.Close()
			var nln net.Listener
			ns.Do(t, func() { nln, err = net.Listen("tcp4", "127.0.0.1:0") })
			if err != nil {
				t.Fatal(err)
			}
			nd, err := client.NewDialer(client.Config{Namespace: ns.Name, Options: tc.o, PoolSize: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer nd.Close()
			_, nc := accepted(t, nln, func(a string) (net.Conn, error) { return nd.DialContext(t.Context(), "tcp4", a) })
			for name, got := range map[string]rawsock.Options{
				"accepted (listener)":                      tcpOptions(t, s.(syscall.Conn)),
				"dialed (client, made by the dialer)":      tcpOptions(t, c.(syscall.Conn)),
				"dialed into a namespace (client, pooled)": tcpOptions(t, nc.(syscall.Conn)),
				"pooled (sockpool)":                        tcpOptions(t, f),
			} {
				if tc.o.KeepAlive < 0 {
					got.KeepIdle, got.KeepInterval, got.KeepCount = 0, 0, 0
				}
				if got != tc.want {
					t.Errorf("%s: %+v, want %+v", name, got, tc.want)
				}
			}
		})
	}
}

func TestKeepAliveOff(t *testing.T) {
	o := sockopt.Options{KeepAlive: -1}
	ln, err := listener.Listen("tcp4", "127.0.0.1:0", listener.Config{Options: o})
	if err != nil {
		t.Fatal(err)
	}
	d, err := client.NewDialer(client.Config{Options: o, PoolSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s, c := accepted(t, ln, func(a string) (net.Conn, error) { return d.DialContext(t.Context(), "tcp4", a) })
	for name, conn := range map[string]net.Conn{"accepted": s, "dialed": c} {
		if got := tcpOptions(t, conn.(syscall.Conn)); got.KeepAlive {
			t.Errorf("%s: SO_KEEPALIVE on with KeepAlive -1", name)
		}
	}
	if kc := o.KeepAliveConfig(); kc.Enable {
		t.Fatalf("KeepAliveConfig %+v", kc)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		o     sockopt.Options
		field string
	}{
		{sockopt.Options{KeepAliveInterval: -1}, "KeepAliveInterval"},
		{sockopt.Options{KeepAliveCount: -1}, "KeepAliveCount"},
		{sockopt.Options{ReadBuffer: -1}, "ReadBuffer"},
		{sockopt.Options{WriteBuffer: -1}, "WriteBuffer"},
		// Past the kernel's limits: setsockopt would say EINVAL.
		{sockopt.Options{KeepAlive: 10 * time.Hour}, "KeepAlive"},
		{sockopt.Options{KeepAliveInterval: 10 * time.Hour}, "KeepAliveInterval"},
		{sockopt.Options{KeepAliveCount: 200}, "KeepAliveCount"},
	} {
		err := tc.o.Validate()
		if !errors.Is(err, sockopt.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%+v: %v, want ErrInvalidConfig naming %s", tc.o, err, tc.field)
		}
		// Every constructor reports it, as the same error.
		if _, err := listener.Listen("tcp", "127.0.0.1:0", listener.Config{Options: tc.o}); !errors.Is(err, listener.ErrInvalidConfig) {
			t.Errorf("listener: %v", err)
		}
		if _, err := client.NewDialer(client.Config{Options: tc.o}); !errors.Is(err, client.ErrInvalidConfig) {
			t.Errorf("client: %v", err)
		}
		if _, err := sockpool.New(sockpool.Config{Options: tc.o}); !errors.Is(err, sockpool.ErrInvalidConfig) {
			t.Errorf("sockpool: %v", err)
		}
	}
	for _, ok := range []sockopt.Options{{}, {KeepAlive: -1}, {Nagle: true, ReadBuffer: 1 << 16},
		{KeepAlive: sockopt.MaxKeepAlive, KeepAliveInterval: sockopt.MaxKeepAliveInterval, KeepAliveCount: sockopt.MaxKeepAliveCount}} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	if !errors.Is(sockopt.ErrUnsupported, errors.ErrUnsupported) {
		t.Fatal("ErrUnsupported does not match errors.ErrUnsupported")
	}
}

// Keep-alive times that are not whole seconds read back the same from
// every component that makes sockets as from stock net.Dialer and
// net.ListenConfig (the control): rounded up, net's rule.
func TestFractionalKeepAliveAsNet(t *testing.T) {
	o := sockopt.Options{KeepAlive: 1500 * time.Millisecond, KeepAliveInterval: 2500 * time.Millisecond, KeepAliveCount: 3}
	ka := o.KeepAliveConfig()
	lc := net.ListenConfig{KeepAliveConfig: ka}
	stockLn, err := lc.Listen(t.Context(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nd := &net.Dialer{KeepAliveConfig: ka}
	stockS, stockC := accepted(t, stockLn, func(a string) (net.Conn, error) { return nd.Dial("tcp4", a) })
	want := tcpOptions(t, stockC.(syscall.Conn))
	if want.KeepIdle != 2*time.Second || want.KeepInterval != 3*time.Second {
		t.Fatalf("stock net.Dialer gives %+v; the control is not what this test assumes", want)
	}

	ln, err := listener.Listen("tcp4", "127.0.0.1:0", listener.Config{Options: o})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := accepted(t, ln, func(a string) (net.Conn, error) { return net.Dial("tcp4", a) })
	plain, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := plain.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	plain.Close()
	fl, err := listener.FileListener(f, listener.Config{Options: o})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	fs, _ := accepted(t, fl, func(a string) (net.Conn, error) { return net.Dial("tcp4", a) })
	d, err := client.NewDialer(client.Config{Options: o, PoolSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, c := accepted(t, stockLn, func(a string) (net.Conn, error) { return d.DialContext(t.Context(), "tcp4", a) })
	for name, got := range map[string]rawsock.Options{
		"stock accepted (net.ListenConfig)": tcpOptions(t, stockS.(syscall.Conn)),
		"accepted (listener.Listen)":        tcpOptions(t, s.(syscall.Conn)),
		"accepted (listener.FileListener)":  tcpOptions(t, fs.(syscall.Conn)),
		"dialed (client)":                   tcpOptions(t, c.(syscall.Conn)),
	} {
		if got != want {
			t.Errorf("%s: %+v, want %+v (stock net.Dialer)", name, got, want)
		}
	}
}
