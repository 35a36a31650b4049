// Package nsexec runs a function inside another network namespace, on an OS
// thread locked for the purpose, for the rare operations (creating a
// listening socket, say) that must happen there once.
package nsexec

import (
	"fmt"
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

// Do runs fn inside namespace ns ("" runs it here, directly). fn runs on a
// goroutine of its own, locked to its thread; if the thread cannot be
// returned to its namespace afterwards it stays locked, and the runtime
// terminates it when the goroutine ends instead of reusing it.
func Do(ns string, fn func() error) error {
	path, err := Path(ns)
	if err != nil {
		return err
	}
	if path == "" {
		return fn()
	}
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("opening network namespace %q: %w", ns, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering network namespace %q: %w", ns, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("leaving network namespace %q: %w (thread discarded)", ns, err)
			return // still locked: the thread dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
