package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/connopt/connopt/internal/confcheck"
	"github.com/connopt/connopt/internal/drain"
	"github.com/connopt/connopt/internal/nsexec"
	"github.com/connopt/connopt/listener"
	"github.com/connopt/connopt/prefork"
	"github.com/connopt/connopt/sockopt"
)

// Defaults applied to a zero Config.
const (
	DefaultAddr               = ":8080"
	DefaultMetricsPath        = "/metrics"
	DefaultReadTimeout        = 30 * time.Second
	DefaultWriteTimeout       = 30 * time.Second
	DefaultIdleTimeout        = 60 * time.Second
	DefaultMaxRequestBodySize = 4 << 20
	DefaultShutdownTimeout    = 10 * time.Second
	DefaultDrainTimeout       = drain.DefaultTimeout
)

// ErrShutdownTimeout is returned by Run when requests were still in flight
// at the shutdown deadline; their connections were closed.
var ErrShutdownTimeout = errors.New("server: shutdown deadline passed with requests in flight")

// ErrInvalidConfig is matched by the error New returns for a nil handler or
// a Config value that has no meaning, such as a negative timeout. It is
// sockopt.ErrInvalidConfig.
var ErrInvalidConfig = sockopt.ErrInvalidConfig

// Config configures a Server. Every zero value means the documented default.
type Config struct {
	// Addr is the listening address. Zero means DefaultAddr.
	Addr string
	// Shards is the number of SO_REUSEPORT listeners, each with its own
	// Serve loop. Zero means GOMAXPROCS.
	Shards int
	// Listener configures the listening sockets (its Metrics field is
	// ignored: the server makes one Metrics for all shards, and WrapConns
	// is decided by PlainConns).
	Listener listener.Config
	// PlainConns hands the handler the standard *net.TCPConn
	// (ctx.Conn().(*net.TCPConn) holds, fasthttp writes large responses
	// with one writev) instead of a *listener.Conn. The server then loses
	// the listener's active and peer-closed series and the lazy deadlines
	// that make its three per-request timeouts nearly free.
	PlainConns bool
	// Namespace, if set, is the network namespace (name or path) to listen
	// in; the handler runs as usual.
	Namespace string

	// DisableMetrics turns the metrics endpoint off.
	DisableMetrics bool
	// MetricsPath is where metrics are served. Zero means DefaultMetricsPath.
	MetricsPath string
	// MetricsAddr, if set, serves metrics on a listener of their own (in
	// the server's namespace) instead of on Addr.
	MetricsAddr string
	// Registry receives the listener's collectors and is what the metrics
	// endpoint serves. Nil means a new registry with the Go and process
	// collectors.
	Registry *prometheus.Registry

	// Name is the Server header. Timeouts, body size and concurrency are
	// fasthttp's, with the defaults above (Concurrency: fasthttp's).
	Name               string
	ReadTimeout        time.Duration
	WriteTimeout       time.Duration
	IdleTimeout        time.Duration
	MaxRequestBodySize int
	Concurrency        int
	// MaxIdleWorkerDuration is fasthttp's: how long an idle worker
	// goroutine lives, and how often the pool is swept. Zero means
	// fasthttp's 10 s. A sweeper goroutine per shard outlives Run by up to
	// this long (fasthttp checks for the stop only between sweeps).
	MaxIdleWorkerDuration time.Duration

	// ShutdownTimeout bounds the graceful stop. Zero means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// DrainTimeout is how long, once the stop has begun, keep-alive
	// connections get to send one more request (answered with
	// Connection: close) before those still idle are closed: a client
	// that sends just as the server closes an idle connection sees a
	// reset, one that is told to close does not. Zero means
	// DefaultDrainTimeout (bounded by ShutdownTimeout); negative closes
	// idle connections at once, as fasthttp's Shutdown does.
	DrainTimeout time.Duration

	// Prefork, if set, serves from several processes (package prefork).
	// In the parent, New opens Prefork.Children sockets on Addr with
	// Listener's options, and Run supervises children of this executable
	// (SIGINT and SIGTERM stop them, SIGHUP hands over to a new
	// generation); the handler never runs there. In each child, New
	// takes the socket its parent passed, Run serves it, and SIGTERM is a
	// graceful stop. Shards is not used; Prefork.Listener,
	// Prefork.DisableSignals and a nil Prefork.Logger are taken from
	// this Config. With MetricsAddr, child k serves metrics on its port
	// plus k (with SO_REUSEPORT, so that the next generation's child k can
	// bind it while this one stops), so each child can be scraped.
	Prefork *prefork.Config
	// DisableSignals stops Run from treating SIGINT and SIGTERM as a stop.
	DisableSignals bool
	// Logger receives fasthttp's and the server's messages. Nil means
	// fasthttp's default.
	Logger fasthttp.Logger
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Server is a fasthttp server on connopt listeners.
type Server struct {
	cfg       Config
	fs        *fasthttp.Server
	lns       []*listener.Listener
	metricsFS *fasthttp.Server
	metricsLn *listener.Listener
	reg       *prometheus.Registry
	accept    []net.Listener      // what Serve loops accept on: lns, or a prefork child's listener
	sup       *prefork.Supervisor // in a prefork parent, instead of serving

	drain *drain.Tracker // open connections, and whether the stop has begun
}

// New listens and prepares the server; Run serves. On error nothing is left
// open.
func New(handler fasthttp.RequestHandler, cfg Config) (*Server, error) {
	if handler == nil {
		return nil, confcheck.Invalid("nil handler")
	}
	if err := confcheck.NonNegative(
		confcheck.Int("Shards", cfg.Shards),
		confcheck.Duration("ReadTimeout", cfg.ReadTimeout), confcheck.Duration("WriteTimeout", cfg.WriteTimeout),
		confcheck.Duration("IdleTimeout", cfg.IdleTimeout), confcheck.Int("MaxRequestBodySize", cfg.MaxRequestBodySize),
		confcheck.Int("Concurrency", cfg.Concurrency), confcheck.Duration("MaxIdleWorkerDuration", cfg.MaxIdleWorkerDuration),
		confcheck.Duration("ShutdownTimeout", cfg.ShutdownTimeout),
	); err != nil {
		return nil, err
	}
	cfg.Addr = orDefault(cfg.Addr, DefaultAddr)
	cfg.Shards = orDefault(cfg.Shards, runtime.GOMAXPROCS(0))
	cfg.MetricsPath = orDefault(cfg.MetricsPath, DefaultMetricsPath)
	cfg.ShutdownTimeout = orDefault(cfg.ShutdownTimeout, DefaultShutdownTimeout)
	s := &Server{cfg: cfg, reg: cfg.Registry, drain: drain.New()}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
		s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if cfg.Prefork != nil && !prefork.Child() {
		pc := *cfg.Prefork
		pc.Listener = cfg.Listener
		pc.Listener.WrapConns = !cfg.PlainConns
		pc.DisableSignals = pc.DisableSignals || cfg.DisableSignals
		if pc.Logger == nil && cfg.Logger != nil {
			pc.Logger = cfg.Logger
		}
		err := nsexec.Do(cfg.Namespace, func() error {
			var err error
			s.sup, err = prefork.New("tcp", cfg.Addr, pc)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		return s, nil
	}

	lc := cfg.Listener
	lc.Metrics = listener.NewMetrics()
	lc.WrapConns = !cfg.PlainConns
	err := nsexec.Do(cfg.Namespace, func() error {
		if cfg.Prefork != nil {
			ln, err := prefork.Listener(lc)
			if err != nil {
				return err
			}
			s.lns, s.accept = []*listener.Listener{ln.Listener}, []net.Listener{ln}
		} else {
			var err error
			if s.lns, err = listener.ListenShards("tcp", cfg.Addr, cfg.Shards, lc); err != nil {
				return err
			}
			for _, ln := range s.lns {
				s.accept = append(s.accept, ln)
			}
		}
		if !cfg.DisableMetrics && cfg.MetricsAddr != "" {
			addr, err := childMetricsAddr(cfg.MetricsAddr, prefork.Slot())
			if err != nil {
				return err
			}
			// A prefork child's metrics socket is its own, and the next
			// generation binds the same port while this one still serves:
			// SO_REUSEPORT lets both.
			s.metricsLn, err = listener.Listen("tcp", addr, listener.Config{Metrics: lc.Metrics, WrapConns: lc.WrapConns, ReusePort: cfg.Prefork != nil})
			return err
		}
		return nil
	})
	if err != nil {
		s.closeListeners()
		return nil, fmt.Errorf("server: %w", err)
	}
	if err := s.reg.Register(lc.Metrics); err != nil {
		s.closeListeners()
		return nil, fmt.Errorf("server: registering the listener's metrics: %w", err)
	}

	app := handler
	h := app
	if !cfg.DisableMetrics {
		metrics := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
		if s.metricsLn != nil {
			s.metricsFS = &fasthttp.Server{Handler: onlyPath(cfg.MetricsPath, metrics), Name: cfg.Name, Logger: cfg.Logger,
				ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
		} else {
			path := cfg.MetricsPath
			h = func(ctx *fasthttp.RequestCtx) {
				if string(ctx.Path()) == path {
					metrics(ctx)
					return
				}
				app(ctx)
			}
		}
	}
	s.fs = &fasthttp.Server{
		Handler:               h,
		Name:                  cfg.Name,
		ReadTimeout:           orDefault(cfg.ReadTimeout, DefaultReadTimeout),
		WriteTimeout:          orDefault(cfg.WriteTimeout, DefaultWriteTimeout),
		IdleTimeout:           orDefault(cfg.IdleTimeout, DefaultIdleTimeout),
		MaxRequestBodySize:    orDefault(cfg.MaxRequestBodySize, DefaultMaxRequestBodySize),
		Concurrency:           cfg.Concurrency,
		Logger:                cfg.Logger,
		MaxIdleWorkerDuration: cfg.MaxIdleWorkerDuration,
		// The listener set keep-alive on the listening socket; fasthttp's
		// TCPKeepalive would set it again on every connection.
		TCPKeepalive: false,
		// Read the clock for RequestCtx.Time only when something asks
		// (middleware.Metrics does): fasthttp otherwise reads it for every
		// request.
		LazyRequestTime: true,
	}
	// Once the stop has begun, every response says Connection: close, the
	// metrics served on Addr too, so keep-alive clients stop sending on
	// connections about to be closed.
	s.drain.Install(s.fs)
	return s, nil
}

// childMetricsAddr is the metrics address of prefork child slot: the
// port plus slot (unless the port is 0). Outside a child (slot -1) it is
// addr.
func childMetricsAddr(addr string, slot int) (string, error) {
	if slot <= 0 {
		return addr, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p == 0 {
		return addr, nil // a service name, or 0: each child gets what it gets
	}
	return net.JoinHostPort(host, strconv.Itoa(p+slot)), nil
}

func onlyPath(path string, h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != path {
			ctx.Error(fasthttp.StatusMessage(fasthttp.StatusNotFound), fasthttp.StatusNotFound)
			return
		}
		h(ctx)
	}
}

// Addr is the address the server listens on (all shards share it).
func (s *Server) Addr() net.Addr {
	if s.sup != nil {
		return s.sup.Addr()
	}
	return s.lns[0].Addr()
}

// Supervisor is the prefork supervisor in a prefork parent (Upgrade, Pids,
// Stats), nil otherwise.
func (s *Server) Supervisor() *prefork.Supervisor { return s.sup }

// MetricsAddr is the metrics listener's address, or nil if metrics share
// Addr or are off.
func (s *Server) MetricsAddr() net.Addr {
	if s.metricsLn == nil {
		return nil
	}
	return s.metricsLn.Addr()
}

// Registry is where the server's collectors are, and what /metrics serves.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// ListenerMetrics are the shards' shared counters; nil in a prefork
// parent, which accepts nothing.
func (s *Server) ListenerMetrics() *listener.Metrics {
	if len(s.lns) == 0 {
		return nil
	}
	return s.lns[0].Metrics()
}

func (s *Server) closeListeners() {
	for _, ln := range s.lns {
		ln.Close()
	}
	if s.metricsLn != nil {
		s.metricsLn.Close()
	}
}

// Run serves until ctx is done (or, unless DisableSignals, SIGINT or
// SIGTERM arrives), then stops gracefully: listeners close at once, so new
// connections are refused (a prefork child's socket stays open in its
// parent: its queue is the next generation's); requests in flight finish
// and get their responses with Connection: close; keep-alive connections
// get DrainTimeout to send one more request, answered the same way; those
// still idle are then closed. Connections still busy at ShutdownTimeout
// are closed and Run returns ErrShutdownTimeout. A Serve loop that fails
// stops the server and its error is returned. In a prefork parent, Run is
// the Supervisor's Run.
func (s *Server) Run(ctx context.Context) error {
	if s.sup != nil {
		return s.sup.Run(ctx)
	}
	if !s.cfg.DisableSignals {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	n := len(s.accept)
	errc := make(chan error, n+1)
	for _, ln := range s.accept {
		go func() { errc <- s.fs.Serve(ln) }()
	}
	if s.metricsFS != nil {
		n++
		go func() { errc <- s.metricsFS.Serve(s.metricsLn) }()
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		n--
	}

	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	drainFor := -time.Duration(1)
	if s.cfg.DrainTimeout >= 0 {
		drainFor = cmp.Or(s.cfg.DrainTimeout, DefaultDrainTimeout)
	}
	err := s.drain.Stop(s.fs, s.closeListeners, drainFor, deadline)
	if s.metricsFS != nil {
		sctx, cancel := context.WithDeadline(context.Background(), deadline)
		s.metricsFS.ShutdownWithContext(sctx)
		cancel()
	}
	if errors.Is(err, drain.ErrShutdownTimeout) {
		err = ErrShutdownTimeout
	}
	for range n {
		if e := <-errc; serveErr == nil && e != nil {
			serveErr = e
		}
	}
	if serveErr != nil {
		return fmt.Errorf("server: %w", serveErr)
	}
	return err
}
