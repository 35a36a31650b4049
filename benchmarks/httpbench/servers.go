package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/reuseport"

	"github.com/connopt/connopt/listener"
	"github.com/connopt/connopt/middleware"
	"github.com/connopt/connopt/server"
)

// serveEnv names the server a child process runs. An environment variable,
// not a flag, so that the test binary can be a server too.
const serveEnv = "CONNOPT_HTTPBENCH_SERVE"

// The servers compared. gnet is a separate binary (its own module).
var allServers = []string{"net/http", "fasthttp", "fasthttp-reuseport", "connopt", "connopt-wrap", "connopt-server", "gnet"}

const baseline = "fasthttp"

func hello(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("text/plain")
	ctx.WriteString("Hello, World!")
}

// runServer serves hello-world as kind on addr and prints "ready ADDR".
// Every server answers with the same headers: Server, Date, Content-Type,
// Content-Length.
func runServer(kind, addr string) {
	var ln net.Listener
	var err error
	fs := &fasthttp.Server{Handler: hello, Name: "bench"}
	switch kind {
	case "net/http":
		ln, err = net.Listen("tcp4", addr)
		if err == nil {
			fmt.Printf("ready %s\n", ln.Addr())
			log.Fatal(http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header()["Server"] = []string{"bench"}
				w.Header()["Content-Type"] = []string{"text/plain"}
				w.Write([]byte("Hello, World!"))
			})))
		}
	case "fasthttp":
		ln, err = net.Listen("tcp4", addr)
	case "fasthttp-reuseport":
		ln, err = reuseport.Listen("tcp4", addr)
	case "connopt":
		ln, err = listener.Listen("tcp4", addr, listener.Config{})
	case "connopt-wrap":
		// The same listener handing out *listener.Conn (counters, lazy
		// deadlines) instead of *net.TCPConn.
		ln, err = listener.Listen("tcp4", addr, listener.Config{WrapConns: true})
	case "connopt-server", "connopt-server-nometrics":
		// The second is a diagnostic (not in the default set): the same
		// server without the metrics middleware.
		reg := prometheus.NewRegistry()
		h := hello
		if kind == "connopt-server" {
			h = middleware.Chain(hello, middleware.Metrics(reg))
		}
		s, err := server.New(h, server.Config{Addr: addr, Shards: 1, Registry: reg, Name: "bench"})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("ready %s\n", s.Addr())
		log.Fatal(s.Run(context.Background()))
	default:
		err = fmt.Errorf("unknown server %q", kind)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("ready %s\n", ln.Addr())
	log.Fatal(fs.Serve(ln))
}

func init() {
	if kind := os.Getenv(serveEnv); kind != "" {
		runServer(kind, "127.0.0.1:0")
		os.Exit(0)
	}
}
