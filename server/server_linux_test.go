package server

import (
	"net"
	"testing"
	"time"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/internal/testns"
)

// Listening inside a namespace: reachable from a client dialing in that
// namespace, not from the host's.
func TestListenInNamespace(t *testing.T) {
	ns := testns.New(t, nil)
	s, err := New(hello, Config{Addr: "127.0.0.1:0", Shards: 2, Namespace: ns.Name, DisableSignals: true, Logger: testkit.Quiet{}})
	if err != nil {
		t.Fatal(err)
	}
	start(t, s)
	addr := s.Addr().String()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("%s answers in the host namespace", addr)
	}
	d, err := client.NewDialer(client.Config{Namespace: ns.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	hc := d.HostClient(addr)
	defer hc.CloseIdleConnections()
	status, body, err := hc.GetTimeout(nil, "http://"+addr+"/", 5*time.Second)
	if err != nil || status != 200 || string(body) != "Hello, World!" {
		t.Fatalf("inside the namespace: %d %q %v", status, body, err)
	}
}
