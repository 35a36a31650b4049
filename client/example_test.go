//go:build linux

package client_test

import (
	"fmt"
	"log"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/client"
)

// A fasthttp.HostClient on connopt's dialer. Config.Namespace ("tenant-a")
// dials from inside a network namespace, Config.Ports leases source ports
// per destination; both are optional.
func ExampleDialer_HostClient() {
	ln, err := net.Listen("tcp4", "127.0.0.1:0") // an upstream
	if err != nil {
		log.Fatal(err)
	}
	go fasthttp.Serve(ln, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("hello from upstream") })
	defer ln.Close()

	d, err := client.NewDialer(client.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	prometheus.NewRegistry().MustRegister(d)

	hc := d.HostClient(ln.Addr().String()) // a *fasthttp.HostClient
	status, body, err := hc.Get(nil, "http://"+ln.Addr().String()+"/")
	fmt.Println(status, string(body), err)
	// Output: 200 hello from upstream <nil>
}
