// Command fiber is a Fiber v2 app on connopt: Fiber serves on connopt's
// listener (the one-line change), with connopt's request metrics and the
// listener's at /metrics, in one process or, with -prefork N, in N
// processes that hand over to a new binary on SIGHUP without losing a
// connection (package prefork; Fiber's own Prefork option cannot take a
// listener it did not open).
//
// It is its own Go module, so that Fiber never enters connopt's module
// graph.
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

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/listener"
	"github.com/connopt/connopt/middleware"
	"github.com/connopt/connopt/prefork"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	children := flag.Int("prefork", 0, "serve from this many processes (0: this process only)")
	flag.Parse()
	if *children > 0 {
		// The parent supervises; each child runs serve on the socket it
		// inherited. SIGHUP to the parent hands over to a new generation.
		// Told to stop, a child drains as connopt's server does (keep-alive
		// clients get one more response, with Connection: close) before
		// fasthttp's Shutdown.
		reg := newRegistry()
		app := newApp(reg)
		err := prefork.ServeFasthttpWith("tcp", *addr, prefork.Config{Children: *children}, app.Server(), func(ln net.Listener) error {
			registerListener(reg, ln)
			return app.Listener(ln)
		})
		if err != nil {
			log.Fatal(err)
		}
		return
	}
	ln, err := listener.Listen("tcp", *addr, listener.Config{})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Printf("connopt fiber: serving on http://%s/ (metrics at /metrics); Ctrl-C stops\n", ln.Addr())
	if err := serve(ctx, ln); err != nil {
		log.Fatal(err)
	}
}

// serve runs the app on ln until ctx is done, then shuts it down.
func serve(ctx context.Context, ln net.Listener) error {
	reg := newRegistry()
	registerListener(reg, ln)
	app := newApp(reg)
	go func() {
		<-ctx.Done()
		app.ShutdownWithTimeout(10 * time.Second)
	}()
	return app.Listener(ln)
}

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// registerListener adds connopt's listener series, if ln has them.
func registerListener(reg *prometheus.Registry, ln net.Listener) {
	if m, ok := ln.(interface{ Metrics() *listener.Metrics }); ok {
		reg.MustRegister(m.Metrics())
	}
}

// newApp is the Fiber app: a hello route, a route that panics (to see the
// 500 in the metrics), and /metrics.
func newApp(reg *prometheus.Registry) *fiber.App {
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(recover.New())
	app.Use(fiberMiddleware(middleware.Metrics(reg)))
	app.Get("/", func(c *fiber.Ctx) error {
		return c.SendString("Hello, World!")
	})
	app.Get("/panic", func(c *fiber.Ctx) error {
		panic("on purpose")
	})
	app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	return app
}

// fiberMiddleware runs a connopt (fasthttp) middleware around the rest of
// Fiber's chain. An error the chain returns is handed to the app's error
// handler inside it, so that the middleware sees the status Fiber sends (a
// 404 for no route, say); a panic passes through it (connopt's Metrics
// records it as 500) to Fiber's recover.
func fiberMiddleware(mw middleware.Middleware) fiber.Handler {
	return func(c *fiber.Ctx) error {
		var err error
		mw(func(*fasthttp.RequestCtx) {
			if err = c.Next(); err != nil {
				err = c.App().Config().ErrorHandler(c, err)
			}
		})(c.Context())
		return err
	}
}
