package testkit

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/connopt/connopt/internal/rawsock"
)

// SockOptions reads back the options of c's socket.
func SockOptions(t testing.TB, c syscall.Conn) rawsock.Options {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var o rawsock.Options
	if err := rawsock.Control(rc, func(fd int) (err error) { o, err = rawsock.ReadOptions(fd); return err }); err != nil {
		t.Fatal(err)
	}
	return o
}

// ThreadNamespaces counts the process's OS threads (/proc/self/task) by the
// network namespace each is in, keyed by its /proc link ("net:[INODE]").
func ThreadNamespaces(t testing.TB) map[string]int {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, p := range tasks {
		l, err := os.Readlink(p)
		if err != nil {
			continue // the thread exited
		}
		out[l]++
	}
	return out
}
