// Command proxy is a reverse proxy built from connopt's parts: server (with
// the metrics, recover and limit middleware) in front, and client behind it,
// dialing an upstream that lives inside a network namespace, through a
// socket pool made in that namespace: no setns on the request path.
//
//	proxy -addr 127.0.0.1:8080 -netns NAME -upstream 127.0.0.1:9000
//
// With -demo (needs root and iproute2) it makes the namespace itself,
// starts an upstream server inside it, and removes both on exit: then
// `curl http://127.0.0.1:8080/` answers from inside the namespace, and
// `curl http://127.0.0.1:8080/metrics` shows server, listener, middleware,
// client and socket-pool series in one scrape.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/middleware"
	"github.com/connopt/connopt/ports"
	"github.com/connopt/connopt/server"
)

// Config is what run needs.
type Config struct {
	Addr      string // where the proxy listens
	Upstream  string // ip:port of the upstream, as seen from inside Namespace
	Namespace string // the upstream's network namespace; "" for this one
	Limit     int    // requests in flight before 503
	// Inner, if set, wraps the proxy handler inside the middleware (the
	// Prometheus test injects a panic with it).
	Inner middleware.Middleware
}

func main() {
	var cfg Config
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "address the proxy listens on")
	flag.StringVar(&cfg.Upstream, "upstream", "127.0.0.1:9000", "upstream ip:port inside the namespace")
	flag.StringVar(&cfg.Namespace, "netns", "", "network namespace of the upstream (name or path); empty: this one")
	flag.IntVar(&cfg.Limit, "limit", 1024, "requests in flight before the proxy answers 503")
	demo := flag.Bool("demo", false, "create a namespace with an upstream server in it (root, iproute2)")
	flag.Parse()

	ctx := context.Background()
	if *demo {
		ns, stop, err := startDemoUpstream(cfg.Upstream)
		if err != nil {
			log.Fatalf("demo: %v (run as root with iproute2 installed, or pass -netns and -upstream)", err)
		}
		defer stop()
		cfg.Namespace = ns
	}
	err := run(ctx, cfg, func(a net.Addr) {
		fmt.Printf("connopt proxy: http://%s/ -> %s in namespace %q; metrics at http://%s/metrics; Ctrl-C stops\n",
			a, cfg.Upstream, cfg.Namespace, a)
	})
	if err != nil {
		log.Fatal(err)
	}
}

// run serves the proxy until ctx is done or a signal arrives.
func run(ctx context.Context, cfg Config, ready func(net.Addr)) error {
	// Source ports for the upstream come from connopt's allocator: a busy
	// proxy dials one upstream address far more often than the kernel's
	// port search likes.
	pa, err := ports.New(ports.Config{})
	if err != nil {
		return err
	}
	d, err := client.NewDialer(client.Config{Namespace: cfg.Namespace, ConnectTimeout: 2 * time.Second, Ports: pa})
	if err != nil {
		return err
	}
	defer d.Close()
	up := d.HostClient(cfg.Upstream)
	up.ReadTimeout, up.WriteTimeout = 30*time.Second, 30*time.Second
	defer up.CloseIdleConnections()

	proxy := func(ctx *fasthttp.RequestCtx) {
		req := &ctx.Request
		req.Header.Del("Connection") // hop-by-hop: the upstream connection is ours
		if err := up.DoTimeout(req, &ctx.Response, 30*time.Second); err != nil {
			ctx.ResetBody()
			status := fasthttp.StatusBadGateway
			if errors.Is(err, fasthttp.ErrTimeout) {
				status = fasthttp.StatusGatewayTimeout
			}
			ctx.Error(fmt.Sprintf("upstream: %v", err), status)
			return
		}
		ctx.Response.Header.Del("Connection")
	}

	// One registry for everything: the server adds its listener's series.
	reg := prometheus.NewRegistry()
	reg.MustRegister(d, pa, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var inner fasthttp.RequestHandler = proxy
	if cfg.Inner != nil {
		inner = cfg.Inner(proxy)
	}
	h := middleware.Chain(inner,
		middleware.Recover(reg, nil),
		middleware.Metrics(reg),
		middleware.Limit(max(1, cfg.Limit), time.Second, reg))
	srv, err := server.New(h, server.Config{Addr: cfg.Addr, Name: "connopt-proxy", Registry: reg})
	if err != nil {
		return err
	}
	ready(srv.Addr())
	return srv.Run(ctx)
}

// startDemoUpstream creates a namespace with loopback up (iproute2, as an
// operator would) and serves a fasthttp handler on addr inside it with
// server.Config.Namespace.
func startDemoUpstream(addr string) (ns string, stop func(), err error) {
	ns = fmt.Sprintf("connopt-proxy-demo-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	cleanup := func() { exec.Command("ip", "netns", "del", ns).Run() }
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("ip link set lo up: %v: %s", err, out)
	}
	up, err := server.New(func(ctx *fasthttp.RequestCtx) {
		fmt.Fprintf(ctx, "Hello from the upstream in namespace %s: %s %s\n", ns, ctx.Method(), ctx.RequestURI())
	}, server.Config{Addr: addr, Namespace: ns, Shards: 1, DisableMetrics: true, DisableSignals: true})
	if err != nil {
		cleanup()
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { up.Run(ctx); close(done) }()
	return ns, func() { cancel(); <-done; cleanup() }, nil
}
