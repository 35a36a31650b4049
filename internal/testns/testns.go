// Package testns gives tests a network namespace of their own: created with
// iproute2, loopback up, sysctls set, removed when the test ends. Tests that
// cannot have one (not root, no ip command, not Linux) are skipped with the
// reason.
package testns

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/connopt/connopt/internal/nsexec"
	"github.com/vishvananda/netns"
)

// NS is a named network namespace, /run/netns/Name.
type NS struct {
	Name    string
	handle  netns.NsHandle
	sysctls map[string]string
	gone    atomic.Bool // deleted by Delete and not made again
}

var seq atomic.Uint32

// New creates a namespace with lo up and the given sysctls (for example
// "net.ipv4.ip_local_port_range": "40000 49999") and removes it at the end of
// the test.
func New(t testing.TB, sysctls map[string]string) *NS {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("network namespaces are Linux only")
	}
	if os.Geteuid() != 0 {
		t.Skip("creating a network namespace needs root (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the ip command (iproute2) is not installed; .ci/run installs it")
	}
	name := fmt.Sprintf("connopt-test-%d-%d", os.Getpid(), seq.Add(1))
	if err := nsexec.Create(name, sysctls); err != nil {
		t.Fatal(err)
	}
	n := &NS{Name: name, sysctls: sysctls}
	t.Cleanup(func() {
		if n.gone.Load() {
			return
		}
		if err := nsexec.Delete(name); err != nil {
			t.Error(err)
		}
	})
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatalf("opening namespace %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	n.handle = h
	return n
}

// Delete removes the namespace's name now, as an operator would; what is
// open in it stays until closed. Do keeps entering the original namespace.
func (n *NS) Delete(t testing.TB) {
	t.Helper()
	if err := nsexec.Delete(n.Name); err != nil {
		t.Fatal(err)
	}
	n.gone.Store(true)
}

// Recreate makes a new namespace under the same name (after Delete, or
// replacing the current one), with loopback up and the same sysctls.
func (n *NS) Recreate(t testing.TB) {
	t.Helper()
	if !n.gone.Load() {
		n.Delete(t)
	}
	if err := nsexec.Create(n.Name, n.sysctls); err != nil {
		t.Fatal(err)
	}
	n.gone.Store(false)
}

// Path is the namespace's bind mount.
func (n *NS) Path() string { return "/run/netns/" + n.Name }

// Do runs fn on the calling goroutine, locked to its OS thread and moved
// into the namespace; t.Fatal inside fn is fine. Sockets fn creates belong to
// the namespace and keep working after Do returns; goroutines fn starts run
// on other threads, in the original namespace, so they must not create
// sockets. If the thread cannot be switched back it stays locked, and the
// runtime discards it when the goroutine ends.
func (n *NS) Do(t testing.TB, fn func()) {
	t.Helper()
	leave, err := nsexec.Enter(n.handle)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	defer func() {
		if err := leave(); err != nil {
			t.Errorf("%s: %v", n.Name, err)
		}
	}()
	fn()
}
