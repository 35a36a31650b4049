package listener_test

import (
	"fmt"
	"log"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/listener"
	"github.com/connopt/connopt/sockopt"
)

// The drop-in: one line changes in a fasthttp server.
func Example() {
	ln, err := listener.Listen("tcp", "127.0.0.1:0", listener.Config{}) // was: net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(ln.Metrics())
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.WriteString("Hello, World!") }}
	go srv.Serve(ln)
	defer srv.Shutdown()

	status, body, err := fasthttp.Get(nil, "http://"+ln.Addr().String()+"/")
	fmt.Println(status, string(body), err)
	// Output: 200 Hello, World! <nil>
}

// Options follow sockopt's rule: zero is the default, negative turns off a
// feature that is on by default, booleans turn things on.
func ExampleListen_config() {
	ln, err := listener.Listen("tcp", "127.0.0.1:0", listener.Config{
		Options:     sockopt.Options{KeepAlive: 30 * time.Second}, // first probe after 30 s idle
		DeferAccept: -1,                                           // the server speaks first in this protocol
		WrapConns:   true,                                         // *listener.Conn: counters, lazy deadlines
	})
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	fmt.Println(ln.Addr().Network())

	_, err = listener.Listen("tcp", "127.0.0.1:0", listener.Config{Backlog: -1})
	fmt.Println(err)
	// Output:
	// tcp
	// listen tcp: connopt: invalid Config: Backlog is negative (-1)
}
