// Package testkit holds the helpers connopt's tests share, so that each is
// written once: loggers for fasthttp servers under test, a connected pair
// from any listener and dialer, and reading a socket's options back.
package testkit

import (
	"fmt"
	"io"
	"net"
	"testing"

	"golang.org/x/net/nettest"
)

// Quiet is a fasthttp.Logger that drops everything: for tests that provoke
// the errors fasthttp would log.
type Quiet struct{}

func (Quiet) Printf(string, ...any) {}

// Logger is a fasthttp.Logger that writes into the test's log.
type Logger struct{ T testing.TB }

func (l Logger) Printf(format string, args ...any) { l.T.Logf("fasthttp: "+format, args...) }

// Pair dials ln with dial and accepts the connection. The client sends one
// byte, which the server side has read when Pair returns, so that a
// listener with TCP_DEFER_ACCEPT hands the connection over at once; the
// stream is clean after it.
func Pair(ln net.Listener, dial func(addr string) (net.Conn, error)) (client, server net.Conn, err error) {
	client, err = dial(ln.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	if _, err := client.Write([]byte{'x'}); err != nil {
		client.Close()
		return nil, nil, err
	}
	server, err = ln.Accept()
	if err != nil {
		client.Close()
		return nil, nil, err
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(server, b); err != nil || b[0] != 'x' {
		client.Close()
		server.Close()
		return nil, nil, fmt.Errorf("first byte %q: %v", b, err)
	}
	return client, server, nil
}

// MakePipe is a nettest.MakePipe over ln and dial, for the net.Conn
// conformance suite (nettest.TestConn).
func MakePipe(ln net.Listener, dial func(addr string) (net.Conn, error)) nettest.MakePipe {
	return func() (c1, c2 net.Conn, stop func(), err error) {
		c1, c2, err = Pair(ln, dial)
		if err != nil {
			return nil, nil, nil, err
		}
		return c1, c2, func() { c1.Close(); c2.Close() }, nil
	}
}
