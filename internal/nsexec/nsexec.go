// Package nsexec runs a function inside another network namespace, on an OS
// thread locked for the purpose, for the rare operations (creating a
// listening socket, say) that must happen there once.
package nsexec

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// Path maps a namespace as connopt's configs name it to a path: "" stays ""
// (the caller's namespace), an absolute path stays itself, anything else is
// an iproute2 name under /run/netns.
func Path(ns string) (string, error) {
	switch {
	case ns == "" || strings.HasPrefix(ns, "/"):
		return ns, nil
	case strings.Contains(ns, "/") || ns == "." || ns == "..":
		return "", fmt.Errorf("%q is neither a namespace name nor an absolute path", ns)
	}
	return "/run/netns/" + ns, nil
}

// Enter locks the calling goroutine to its thread and moves the thread
// into target. leave moves it back and unlocks it; if it cannot (or Enter
// failed half-way), the thread stays locked, and the runtime terminates it
// when the goroutine ends instead of reusing it in the wrong namespace.
// This is connopt's one setns: every namespace operation goes through it.
func Enter(target netns.NsHandle) (leave func() error, err error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("current network namespace: %w", err)
	}
	if err := netns.Set(target); err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("entering network namespace: %w", err)
	}
	return func() error {
		defer orig.Close()
		if err := netns.Set(orig); err != nil {
			return fmt.Errorf("leaving network namespace: %w (thread discarded)", err)
		}
		runtime.UnlockOSThread()
		return nil
	}, nil
}

// Switch moves a thread that Enter locked into another namespace; the
// leave Enter returned still brings it home.
func Switch(target netns.NsHandle) error {
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("entering network namespace: %w", err)
	}
	return nil
}

// Open returns a handle on namespace ns as connopt's configs name it; ""
// is the calling thread's own.
func Open(ns string) (netns.NsHandle, error) {
	path, err := Path(ns)
	if err != nil {
		return netns.None(), err
	}
	var h netns.NsHandle
	if path == "" {
		h, err = netns.Get()
	} else {
		h, err = netns.GetFromPath(path)
	}
	if err != nil {
		return netns.None(), fmt.Errorf("opening network namespace %q: %w", ns, err)
	}
	return h, nil
}

// Do runs fn inside namespace ns ("" runs it here, directly), on a
// goroutine of its own locked to its thread (see Enter).
func Do(ns string, fn func() error) error {
	path, err := Path(ns)
	if err != nil {
		return err
	}
	if path == "" {
		return fn()
	}
	target, err := Open(ns)
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		leave, err := Enter(target)
		if err != nil {
			errc <- fmt.Errorf("%q: %w", ns, err)
			return
		}
		ferr := fn()
		if err := leave(); err != nil {
			errc <- fmt.Errorf("%q: %w", ns, err)
			return
		}
		errc <- ferr
	}()
	return <-errc
}

// Create makes a named network namespace (/run/netns/name) with iproute2,
// brings its loopback up and sets the given sysctls in it (for example
// "net.ipv4.ip_local_port_range": "40000 49999"). On error nothing is left
// behind. Tests, benchmarks and the examples' demos use it; the library
// never creates namespaces.
func Create(name string, sysctls map[string]string) error {
	if err := ip("netns", "add", name); err != nil {
		return err
	}
	steps := [][]string{{"-n", name, "link", "set", "lo", "up"}}
	for k, v := range sysctls {
		steps = append(steps, []string{"netns", "exec", name, "sysctl", "-q", "-w", k + "=" + v})
	}
	for _, args := range steps {
		if err := ip(args...); err != nil {
			Delete(name)
			return err
		}
	}
	return nil
}

// Delete removes a namespace Create made.
func Delete(name string) error { return ip("netns", "del", name) }

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// processNS is the network namespace the process started in, read while
// package initialization runs, on the main thread, before any goroutine
// can have moved a thread (the main thread included) elsewhere.
var processNS, processNSErr = os.Stat("/proc/thread-self/ns/net")

// InProcessNamespace reports whether the calling thread is in the network
// namespace the process started in, where every thread that runs unlocked
// goroutines is: a socket any goroutine creates lands there. It is false on
// a thread a goroutine has locked and moved elsewhere, the main thread
// included.
func InProcessNamespace() (bool, error) {
	if processNSErr != nil {
		return false, fmt.Errorf("the process's network namespace: %w", processNSErr)
	}
	self, err := os.Stat("/proc/thread-self/ns/net")
	if err != nil {
		return false, fmt.Errorf("this thread's network namespace: %w", err)
	}
	return os.SameFile(self, processNS), nil
}
