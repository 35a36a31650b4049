package reliability

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/nsexec"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/internal/testns"
	"github.com/connopt/connopt/sockpool"
)

// The upstream's namespace is deleted under a running dialer, then made
// again under the same name: dials fail clearly meanwhile, work again
// after, and the dialer's sockets follow the new namespace.
func TestNamespaceDeletedAndRecreated(t *testing.T) {
	ns := testns.New(t, nil)
	serveIn := func() (addr string, stop func()) {
		var ln net.Listener
		// By name each time: after the re-creation the name leads to a
		// new namespace.
		err := nsexec.Do(ns.Name, func() error {
			var err error
			ln, err = net.Listen("tcp4", "127.0.0.1:7000")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		s := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.WriteString("in") }, Logger: testkit.Quiet{}}
		go s.Serve(ln)
		return ln.Addr().String(), func() { s.Shutdown() }
	}
	addr, stop := serveIn()
	d, err := client.NewDialer(client.Config{Namespace: ns.Name, PoolSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if c, err := d.Dial(addr); err != nil {
		t.Fatal(err)
	} else {
		c.Close()
	}
	stop()

	ns.Delete(t)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := d.Dial(addr)
		if err == nil {
			c.Close()
		} else if errors.Is(err, sockpool.ErrNamespaceGone) || errors.Is(err, errNotExist()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dials into a deleted namespace do not fail clearly: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	ns.Recreate(t)
	addr, stop = serveIn()
	defer stop()
	deadline = time.Now().Add(5 * time.Second)
	for {
		c, err := d.Dial(addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dialer did not follow the recreated namespace: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := d.Stats(); s.DialErrors["namespace"]+s.DialErrors["other"] == 0 {
		t.Fatalf("the failed dials were not counted: %+v", s.DialErrors)
	}
}
