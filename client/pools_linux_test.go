package client

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/connopt/connopt/internal/nsexec"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/internal/testns"
	"github.com/connopt/connopt/sockopt"
	"github.com/connopt/connopt/sockpool"
)

// threads counts the process's OS threads, and those in the namespace
// whose /proc link is ns.
func threads(t *testing.T, ns string) (all, in int) {
	t.Helper()
	for l, n := range testkit.ThreadNamespaces(t) {
		all += n
		if l == ns {
			in += n
		}
	}
	return all, in
}

// nsLink is the /proc link text of a namespace, as threads compares it.
func nsLink(t *testing.T, ns *testns.NS) string {
	t.Helper()
	var l string
	ns.Do(t, func() {
		var err error
		if l, err = os.Readlink("/proc/thread-self/ns/net"); err != nil {
			t.Fatal(err)
		}
	})
	return l
}

// 50 Dialers in the process's namespace, each used, add no OS thread (a
// pool each, before: 49 more, and one more still for the first); 50 into
// one other namespace share one pool thread there, which goes when the
// last of them closes.
func TestDialersShareThreads(t *testing.T) {
	ns := testns.New(t, nil)
	link := nsLink(t, ns)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink := testkit.NewSink(ln)
	defer sink.CloseAll()
	var nln net.Listener
	ns.Do(t, func() { nln, err = net.Listen("tcp4", "127.0.0.1:0") })
	if err != nil {
		t.Fatal(err)
	}
	nsink := testkit.NewSink(nln)
	defer nsink.CloseAll()

	use := func(cfg Config, addr string) []*Dialer {
		var ds []*Dialer
		for range 50 {
			d, err := NewDialer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
			c, err := d.Dial(addr)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
		return ds
	}
	closeAll := func(ds []*Dialer) {
		for _, d := range ds {
			d.Close()
		}
	}

	before, _ := threads(t, link)
	here := use(Config{}, ln.Addr().String())
	after, _ := threads(t, link)
	t.Logf("threads: %d before 50 Dialers in the process's namespace, %d after", before, after)
	// The runtime may start a thread or two of its own while 50
	// dialers work (a syscall that blocks hands its P over); a thread
	// per dialer is 50.
	if after-before > 3 {
		t.Errorf("50 Dialers in the process's namespace added %d OS threads, want none", after-before)
	}
	closeAll(here)

	_, inBefore := threads(t, link)
	if inBefore != 0 {
		t.Fatalf("%d threads in the test namespace before its Dialers", inBefore)
	}
	there := use(Config{Namespace: ns.Name, PoolSize: 8}, nln.Addr().String())
	_, in := threads(t, link)
	t.Logf("threads in the other namespace with 50 Dialers into it: %d", in)
	if in != 1 {
		t.Errorf("50 Dialers into one namespace keep %d threads in it, want 1", in)
	}
	closeAll(there[1:])
	if _, in := threads(t, link); in != 1 {
		t.Errorf("with 1 of the 50 Dialers left, %d threads in the namespace, want 1", in)
	}
	if c, err := there[0].Dial(nln.Addr().String()); err != nil {
		t.Errorf("the last Dialer, after the others closed: %v", err)
	} else {
		c.Close()
	}
	there[0].Close()
	testkit.Eventually(t, "the pool's thread to leave the namespace once the last Dialer closed",
		func() bool { _, in := threads(t, link); return in == 0 })
}

// Dialers into one namespace with different options or sizes do not share
// a pool (each socket carries its options from creation); with the same,
// they do.
func TestSharedPoolKey(t *testing.T) {
	ns := testns.New(t, nil)
	a := newDialer(t, Config{Namespace: ns.Name, PoolSize: 8})
	b := newDialer(t, Config{Namespace: ns.Name, PoolSize: 8})
	c := newDialer(t, Config{Namespace: ns.Name, PoolSize: 8})
	c.Close()
	c = newDialer(t, Config{Namespace: ns.Name, PoolSize: 8, DisablePeerWatch: true})
	other := newDialer(t, Config{Namespace: ns.Name, PoolSize: 8})
	other.Close()
	other = newDialer(t, Config{Namespace: ns.Name, PoolSize: 8})
	e := newDialer(t, Config{Namespace: ns.Name, PoolSize: 8, Options: sockopt.Options{Nagle: true}})
	f := newDialer(t, Config{Namespace: ns.Name, PoolSize: 9})
	pool := func(d *Dialer) *sockpool.Pool { return d.pools[0].Load().pool }
	if pool(a) != pool(b) || pool(a) != pool(c) || pool(a) != pool(other) {
		t.Error("Dialers with the same namespace, options and size do not share a pool")
	}
	if pool(a) == pool(e) || pool(a) == pool(f) || pool(e) == pool(f) {
		t.Error("Dialers with other options or another size share a pool")
	}
}

// A namespace deleted and made again under its name: every Dialer sharing
// its pool fails clearly while it is gone, then dials into the new one.
func TestSharedPoolNamespaceReplaced(t *testing.T) {
	ns := testns.New(t, nil)
	const addr = "127.0.0.1:7070"
	listen := func() *testkit.Sink {
		var ln net.Listener
		err := nsexec.Do(ns.Name, func() (err error) { ln, err = net.Listen("tcp4", addr); return err })
		if err != nil {
			t.Fatal(err)
		}
		return testkit.NewSink(ln)
	}
	s := listen()
	ds := []*Dialer{newDialer(t, Config{Namespace: ns.Name, PoolSize: 8}), newDialer(t, Config{Namespace: ns.Name, PoolSize: 8})}
	for _, d := range ds {
		c, err := d.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	s.Close()
	ns.Delete(t)
	for i, d := range ds {
		testkit.Eventually(t, fmt.Sprintf("Dialer %d to say the namespace is gone", i), func() bool {
			c, err := d.Dial(addr)
			if err == nil {
				c.Close()
			}
			return errors.Is(err, sockpool.ErrNamespaceGone) || errors.Is(err, os.ErrNotExist)
		})
	}
	ns.Recreate(t)
	s = listen()
	defer s.Close()
	for i, d := range ds {
		testkit.Eventually(t, fmt.Sprintf("Dialer %d to dial into the new namespace", i), func() bool {
			c, err := d.Dial(addr)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	if ds[0].pools[0].Load() != ds[1].pools[0].Load() {
		t.Error("after the namespace came back, the two Dialers use different pools")
	}
}

// A Dialer made with Namespace "" on a thread moved into another namespace
// dials there, for both families, from any goroutine: its sockets come
// from pools made on that thread, not from the dialing goroutine's.
func TestDialerMadeOnMovedThread(t *testing.T) {
	ns := testns.New(t, nil)
	var d *Dialer
	var ln4, ln6 net.Listener
	ns.Do(t, func() {
		var err error
		if d, err = NewDialer(Config{PoolSize: 8}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		if ln4, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln4.Close() })
		if ln6, err = net.Listen("tcp6", "[::1]:0"); err != nil {
			t.Skipf("no IPv6 loopback in the namespace: %v", err)
		}
		t.Cleanup(func() { ln6.Close() })
	})
	if d.inline {
		t.Fatal("a Dialer made on a thread in another namespace makes its sockets inline")
	}
	var wg sync.WaitGroup
	for _, ln := range []net.Listener{ln4, ln6} {
		wg.Add(1)
		go func() { // another goroutine, on a thread of the process's namespace
			defer wg.Done()
			c, err := d.DialTimeout(ln.Addr().String(), 2*time.Second)
			if err != nil {
				t.Errorf("%s: %v", ln.Addr(), err)
				return
			}
			c.Close()
			a, err := ln.Accept()
			if err != nil {
				t.Errorf("%s: %v", ln.Addr(), err)
				return
			}
			a.Close()
		}()
	}
	wg.Wait()
}

// A Dialer of the process's namespace dials from the namespace of the
// thread that dials, as net.Dialer does: from a goroutine that locked its
// thread and moved it into another namespace, the socket is made there.
func TestInlineDialFromMovedThread(t *testing.T) {
	ns := testns.New(t, nil)
	d := newDialer(t, Config{})
	if !d.inline {
		t.Fatal("a Dialer of the process's namespace uses a pool")
	}
	var ln net.Listener
	ns.Do(t, func() {
		var err error
		if ln, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	})
	defer ln.Close()
	ns.Do(t, func() {
		for name, dial := range map[string]func() (net.Conn, error){
			"net.Dialer":    func() (net.Conn, error) { return (&net.Dialer{}).Dial("tcp4", ln.Addr().String()) },
			"client.Dialer": func() (net.Conn, error) { return d.Dial(ln.Addr().String()) },
		} {
			c, err := dial()
			if err != nil {
				t.Fatalf("%s from a thread in the namespace: %v", name, err)
			}
			c.Close()
		}
	})
	// From any other goroutine, the same address is the process's
	// namespace's, where nothing listens.
	if c, err := d.Dial(ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("a dial from an unmoved goroutine reached the other namespace's listener")
	}
}
