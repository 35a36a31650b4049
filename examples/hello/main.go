// Command hello is the hello-world fasthttp server on connopt's listener,
// with Prometheus metrics at /metrics. It is what `make run` starts.
//
// The only connopt line is the listener.Listen call; everything else is
// stock fasthttp and client_golang.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/connopt/connopt/listener"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, *addr, func(a net.Addr) {
		fmt.Printf("connopt hello: serving on http://%s/ (metrics at http://%s/metrics); Ctrl-C stops\n", a, a)
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("connopt hello: stopped")
}

// run serves until ctx is done, then shuts down gracefully.
func run(ctx context.Context, addr string, ready func(net.Addr)) error {
	ln, err := listener.Listen("tcp", addr, listener.Config{})
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(ln.Metrics(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Path()) == "/metrics" {
				metrics(ctx)
				return
			}
			ctx.SetContentType("text/plain; charset=utf-8")
			ctx.WriteString("Hello, World!")
		},
		Name:         "connopt-hello",
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
		IdleTimeout:  time.Minute,
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	ready(ln.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.ShutdownWithContext(sctx)
}
