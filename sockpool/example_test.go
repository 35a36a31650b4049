//go:build linux

package sockpool_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/connopt/connopt/sockpool"
)

// A Set keeps one pool per namespace, made on first use: Get(ctx,
// "tenant-a") hands out sockets created in /run/netns/tenant-a. "" is the
// caller's own namespace.
func ExampleSet() {
	set := sockpool.NewSet(sockpool.Config{Size: 16, BindAddressNoPort: true})
	defer set.Close()
	prometheus.NewRegistry().MustRegister(set)

	s, err := set.Get(context.Background(), "")
	if err != nil {
		log.Fatal(err)
	}
	fd, err := s.Detach() // non-blocking, close-on-exec, unconnected; now the caller's
	if err != nil {
		log.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "pooled socket")
	defer f.Close()
	fmt.Println(s.IPv6(), f.Fd() > 2)
	// Output: false true
}
