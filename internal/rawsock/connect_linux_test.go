package rawsock_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/connopt/connopt/internal/rawsock"
	"github.com/connopt/connopt/internal/testkit"
)

// A context that ends just as the connect succeeds: its AfterFunc sets a
// past write deadline, possibly after Connect cleared the dial's. Connect
// must then fail with the context's error, as net.Dialer does (Go issue
// 16523), never hand out a connection every write of which times out.
func TestConnectContextEndsAtSuccess(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sink := testkit.NewSink(ln)
	defer sink.Close()
	remote := ln.Addr().(*net.TCPAddr).AddrPort()
	for _, end := range []string{"cancel", "none"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rawsock.SetTestHookConnected(func() {
			if end == "cancel" {
				cancel()
				time.Sleep(20 * time.Millisecond) // the AfterFunc has run
			}
		})
		fd, err := rawsock.NewTCPSocket(false, rawsock.Options{})
		if err != nil {
			t.Fatal(err)
		}
		f, err := rawsock.Connect(ctx, fd, remote)
		rawsock.SetTestHookConnected(func() {})
		cancel()
		switch {
		case end == "cancel" && !errors.Is(err, context.Canceled):
			var werr error
			if f != nil {
				_, werr = f.Write([]byte("x"))
				f.Close()
			}
			t.Fatalf("context cancelled as the connect succeeded: Connect returned %v (a write on it: %v); want context.Canceled", err, werr)
		case end == "none" && err != nil:
			t.Fatalf("Connect: %v", err)
		case end == "none":
			if _, err := f.Write([]byte("x")); err != nil {
				t.Fatalf("write on a connection whose context did not end: %v", err)
			}
			f.Close()
		}
	}
}
