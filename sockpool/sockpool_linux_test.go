package sockpool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/rawsock"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/internal/testns"
	"github.com/connopt/connopt/sockopt"
)

func newPool(t *testing.T, cfg Config) *Pool {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// connect connects a pooled (non-blocking) socket to 127.0.0.1:port and
// waits for the result.
func connect(t *testing.T, fd, port int) error {
	t.Helper()
	err := unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINPROGRESS) {
		return err
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	if _, err := unix.Poll(pfd, 5000); err != nil {
		return err
	}
	soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if soErr != 0 {
		return unix.Errno(soErr)
	}
	return nil
}

// A socket from namespace A's pool belongs to A: its namespace cookie is
// that of a socket made inside A, and it reaches a listener that exists only
// in A.
func TestSocketsBelongToNamespace(t *testing.T) {
	ns := testns.New(t, nil)
	var ln net.Listener
	var cookieA uint64
	ns.Do(t, func() {
		var err error
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := ln.(*net.TCPListener).SyscallConn()
		rawsock.Control(rc, func(fd int) error { cookieA, err = rawsock.NetnsCookie(fd); return err })
	})
	defer ln.Close()
	go testkit.CloseEach(ln)
	port := ln.Addr().(*net.TCPAddr).Port

	root := newPool(t, Config{Size: 4})
	rs, err := root.Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	if rs.NetnsCookie() == cookieA {
		t.Fatal("the root namespace's pool has namespace A's cookie")
	}
	// Nothing listens on that port in the root namespace.
	if err := connect(t, rs.FD(), port); !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("connect from the root namespace: %v, want ECONNREFUSED", err)
	}

	p := newPool(t, Config{Namespace: ns.Name, Size: 4})
	s, err := p.Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := rawsock.NetnsCookie(s.FD())
	if err != nil {
		t.Fatal(err)
	}
	if got != cookieA || s.NetnsCookie() != cookieA {
		t.Fatalf("pooled socket cookie %d (recorded %d), namespace A's %d", got, s.NetnsCookie(), cookieA)
	}
	if err := connect(t, s.FD(), port); err != nil {
		t.Fatalf("connect from A's pool to A's listener: %v", err)
	}
	// The same pool by path.
	pp := newPool(t, Config{Namespace: ns.Path(), Size: 1})
	if pp.NetnsCookie() != cookieA {
		t.Fatalf("pool by path: cookie %d, want %d", pp.NetnsCookie(), cookieA)
	}
}

func TestOptionsSetAtCreation(t *testing.T) {
	p := newPool(t, Config{Size: 2, ReuseAddr: true, BindAddressNoPort: true, Options: sockopt.Options{KeepAlive: 30 * time.Second, ReadBuffer: 64 << 10}})
	s, err := p.Get(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	get := func(level, name int) int {
		v, err := unix.GetsockoptInt(s.FD(), level, name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if get(unix.IPPROTO_TCP, unix.TCP_NODELAY) != 1 || get(unix.SOL_SOCKET, unix.SO_KEEPALIVE) != 1 ||
		get(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE) != 30 || get(unix.SOL_SOCKET, unix.SO_REUSEADDR) != 1 ||
		get(unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT) != 1 || get(unix.SOL_SOCKET, unix.SO_RCVBUF) != 128<<10 {
		t.Fatal("pooled socket lacks a configured option")
	}
	fl, _ := unix.FcntlInt(uintptr(s.FD()), unix.F_GETFL, 0)
	fdfl, _ := unix.FcntlInt(uintptr(s.FD()), unix.F_GETFD, 0)
	if fl&unix.O_NONBLOCK == 0 || fdfl&unix.FD_CLOEXEC == 0 {
		t.Fatal("pooled socket is not non-blocking and close-on-exec")
	}
}

// 64 goroutines drain the pool while it refills; every socket is handed out
// once, and after Close no descriptor of the pool remains.
func TestConcurrentDrain(t *testing.T) {
	ns := testns.New(t, nil)
	base := leakcheck.FDs(t)
	p, err := New(Config{Namespace: ns.Name, Size: 32, Batch: 8})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[int]bool{}
	var held []*Socket
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for range 40 {
				s, err := p.Get(ctx)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if seen[s.FD()] {
					errs <- fmt.Errorf("fd %d handed out twice while held", s.FD())
				}
				seen[s.FD()] = true
				held = append(held, s)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.HandedOut != 64*40 || st.Created < 64*40 || st.Waits == 0 || st.Refills < 64*40/8 {
		t.Fatalf("stats %+v", st)
	}
	for _, s := range held {
		s.Close()
		s.Close()
	}
	p.Close()
	p.Close()
	leakcheck.Settle(t, base, -1)
	if _, err := p.Get(t.Context()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
}

// After heavy use of pools in two namespaces, every thread is in the
// original namespace except the pools' own; after Close, all of them are.
func TestNoThreadLeftInForeignNamespace(t *testing.T) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	set := NewSet(Config{Size: 16})
	defer set.Close()
	var nss []*testns.NS
	for range 2 {
		nss = append(nss, testns.New(t, nil))
	}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				s, err := set.Get(context.Background(), nss[(g+i)%2].Name)
				if err != nil {
					t.Error(err)
					return
				}
				s.Close()
			}
		}()
	}
	wg.Wait()
	foreign := 0
	for ns, n := range testkit.ThreadNamespaces(t) {
		if ns != self {
			foreign += n
		}
	}
	if foreign > 2 {
		t.Fatalf("%d threads in foreign namespaces, want at most the 2 pool threads", foreign)
	}
	set.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		foreign = 0
		for ns, n := range testkit.ThreadNamespaces(t) {
			if ns != self {
				foreign += n
			}
		}
		if foreign == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d threads still in foreign namespaces after Close: %v", foreign, testkit.ThreadNamespaces(t))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeletedNamespace(t *testing.T) {
	ns := testns.New(t, nil)
	base := leakcheck.FDs(t)
	p, err := New(Config{Namespace: ns.Name, Size: 8, CheckInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if s, err := p.Get(t.Context()); err != nil {
		t.Fatal(err)
	} else {
		s.Close()
	}
	ns.Delete(t)
	// Within a few check intervals Get fails clearly, without hanging.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		s, err := p.Get(ctx)
		cancel()
		if err != nil {
			if !errors.Is(err, ErrNamespaceGone) {
				t.Fatalf("Get after delete: %v, want ErrNamespaceGone", err)
			}
			break
		}
		s.Close()
		if time.Now().After(deadline) {
			t.Fatal("still handing out sockets of a deleted namespace")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := p.Stats(); st.Size != 0 || st.NamespaceChanges != 1 {
		t.Fatalf("stats %+v", st)
	}
	p.Close()
	leakcheck.Settle(t, base, -1)

	if _, err := New(Config{Namespace: "connopt-no-such-namespace"}); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pool of a missing namespace: %v", err)
	}
	for _, bad := range []string{"a/b", "..", "."} {
		if _, err := New(Config{Namespace: bad}); err == nil {
			t.Fatalf("namespace %q accepted", bad)
		}
	}
}

func TestReplacedNamespace(t *testing.T) {
	ns := testns.New(t, nil)
	for _, reopen := range []bool{false, true} {
		t.Run(fmt.Sprintf("reopen=%v", reopen), func(t *testing.T) {
			p := newPool(t, Config{Namespace: ns.Name, Size: 4, CheckInterval: 20 * time.Millisecond, Reopen: reopen})
			old := p.NetnsCookie()
			ns.Recreate(t)
			deadline := time.Now().Add(5 * time.Second)
			for {
				ctx, cancel := context.WithTimeout(t.Context(), time.Second)
				s, err := p.Get(ctx)
				cancel()
				if !reopen && err != nil {
					if !errors.Is(err, ErrNamespaceChanged) && !errors.Is(err, ErrNamespaceGone) {
						t.Fatalf("Get: %v", err)
					}
					return
				}
				if err == nil {
					c := s.NetnsCookie()
					s.Close()
					if reopen && c != old {
						return // following the new namespace
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("no reaction to the replaced namespace (reopen=%v, last error %v)", reopen, err)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

func TestGetWaitsAndHonoursContext(t *testing.T) {
	p := newPool(t, Config{Size: 1, CheckInterval: time.Hour})
	var held []*Socket
	defer func() {
		for _, s := range held {
			s.Close()
		}
	}()
	// Drain faster than a refill of one; Get waits and is served.
	for range 50 {
		s, err := p.Get(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, s)
	}
	if p.Stats().Waits == 0 {
		t.Fatal("no Get waited on an empty pool of one")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for range 3 {
		s, err := p.Get(ctx)
		if err == nil {
			held = append(held, s)
			continue
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Get with a cancelled context: %v", err)
		}
	}
}

func TestCollectors(t *testing.T) {
	set := NewSet(Config{Size: 2})
	defer set.Close()
	s, err := set.Get(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if n := testutil.CollectAndCount(set); n != 7 {
		t.Fatalf("set exposes %d series for one pool, want 7", n)
	}
	if v := testutil.ToFloat64(collectorFor(set, descHandedOut)); v != 1 {
		t.Fatalf("handed out = %v, want 1", v)
	}
	if _, err := set.Pool("bad/name"); err == nil {
		t.Fatal("bad name accepted")
	}
}
