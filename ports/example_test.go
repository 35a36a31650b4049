//go:build linux

package ports_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/connopt/connopt/ports"
)

// Each source address has the whole port range for every destination.
func ExampleAllocator_DialContext() {
	up, err := net.Listen("tcp4", "127.0.0.1:0") // an upstream
	if err != nil {
		log.Fatal(err)
	}
	defer up.Close()

	a, err := ports.New(ports.Config{Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1")}})
	if err != nil {
		log.Fatal(err)
	}
	prometheus.NewRegistry().MustRegister(a)
	conn, err := a.DialContext(context.Background(), "tcp", up.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("leases in use:", a.Stats().InUse)
	conn.Close() // releases the port: our side closed, so it ages first
	fmt.Println("in use:", a.Stats().InUse, "aging:", a.Stats().Aging > 0)
	// Output:
	// leases in use: 1
	// in use: 0 aging: true
}
