package testkit

import (
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
