package middleware

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Middleware wraps a handler.
type Middleware func(fasthttp.RequestHandler) fasthttp.RequestHandler

// Chain wraps h in mws; the first is the outermost, so
// Chain(h, Recover(r), Metrics(r)) recovers panics of Metrics and h.
func Chain(h fasthttp.RequestHandler, mws ...Middleware) fasthttp.RequestHandler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// register registers c, or returns the collector already registered under
// the same descriptors. A nil reg means prometheus.DefaultRegisterer. A
// collector that conflicts with one already registered (same name, other
// labels) is a programming error, reported as MustRegister reports it: a
// panic at construction, never while serving.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("middleware: registering %T: %v", c, err))
	}
	return c
}

// DurationBuckets are the upper bounds of
// connopt_http_request_duration_seconds: 1 µs doubling to 8.4 s, so that a
// fasthttp handler's few microseconds land in buckets of their own rather
// than all in the first one.
var DurationBuckets = prometheus.ExponentialBuckets(1e-6, 2, 24)

// methods are the label values of the method label; anything else is OTHER.
var methods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER"}

func methodIndex(m []byte) int {
	for i, s := range methods[:len(methods)-1] {
		if string(m) == s {
			return i
		}
	}
	return len(methods) - 1
}

// Metrics counts requests by method and status code, observes their
// duration by method, and tracks requests in flight:
//
//	connopt_http_requests_total{method,code}
//	connopt_http_request_duration_seconds{method}  (histogram, DurationBuckets)
//	connopt_http_requests_in_flight
//
// The code recorded is the one sent, wherever Metrics stands in a Chain: a
// panic passing through it is recorded as the 500 that Recover sends, and
// passed on; a timeout response (fasthttp.TimeoutHandler,
// TimeoutWithCodeHandler, ctx.TimeoutError) as its code, when Metrics
// wraps the timeout handler (inside it, Metrics runs in the goroutine the
// timeout handler starts and counts the code the inner handler set); a
// hijacked request as the response
// fasthttp writes before the hijack (unless the handler set
// HijackSetNoResponse, which fasthttp gives no way to read). Requests
// fasthttp could not parse reach no handler: set ErrorHandler on the
// fasthttp.Server to count them. Requests refused by a Limit placed before
// Metrics are not counted; place it before Limit to count those 503s. A
// nil reg means prometheus.DefaultRegisterer, as for Recover and Limit.
func Metrics(reg prometheus.Registerer) Middleware {
	requests := requestsTotal(reg)
	duration := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "connopt_http_request_duration_seconds", Help: "Time spent in the handler, by method.",
		Buckets: DurationBuckets,
	}, []string{"method"}))
	// The in-flight count is a plain atomic read at scrape time: a Gauge's
	// Inc and Dec are float compare-and-swap loops on every request.
	inFlight := &register(reg, &atomicGauge{desc: prometheus.NewDesc("connopt_http_requests_in_flight",
		"Requests being handled now.", nil, nil)}).n
	// Series are created when first used (a GET-only server exposes one
	// histogram, not one per method), then kept in tables of atomic
	// pointers: the per-request path is an index and a load, no label
	// hashing, no allocation.
	var observers [len(methods)]atomic.Pointer[prometheus.Observer]
	observer := func(mi int) prometheus.Observer {
		slot := &observers[mi]
		if o := slot.Load(); o != nil {
			return *o
		}
		o := duration.WithLabelValues(methods[mi])
		slot.CompareAndSwap(nil, &o)
		return *slot.Load()
	}
	counter := newCodeCounters(requests).get
	return func(next fasthttp.RequestHandler) fasthttp.RequestHandler {
		// Whether this handler runs in the goroutine a fasthttp timeout
		// handler starts: where it stands in the chain does not change,
		// so the first request finds out (one look at the stack) for all.
		var where position
		return func(ctx *fasthttp.RequestCtx) {
			inFlight.Add(1)
			inside := where.insideTimeoutHandler()
			// fasthttp has read the clock for this request already (or
			// reads it now, with Server.LazyRequestTime): one clock read
			// per request saved.
			start := ctx.Time()
			if start.IsZero() {
				start = time.Now()
			}
			defer func() {
				code := sentCode(ctx, inside)
				p := recover()
				if p != nil {
					code = fasthttp.StatusInternalServerError // what Recover sends
				}
				mi := methodIndex(ctx.Method())
				observer(mi).Observe(time.Since(start).Seconds())
				counter(mi, code).Inc()
				inFlight.Add(-1)
				if p != nil {
					panic(p)
				}
			}()
			next(ctx)
		}
	}
}

func requestsTotal(reg prometheus.Registerer) *prometheus.CounterVec {
	return register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "connopt_http_requests_total", Help: "HTTP requests handled, by method and status code.",
	}, []string{"method", "code"}))
}

// codeCounters are the series of connopt_http_requests_total, created when
// first used and then kept in a table of atomic pointers: the per-request
// path is an index and a load, no label hashing, no allocation.
type codeCounters struct {
	vec   *prometheus.CounterVec
	slots [len(methods)][600]atomic.Pointer[prometheus.Counter]
}

func newCodeCounters(vec *prometheus.CounterVec) *codeCounters { return &codeCounters{vec: vec} }

func (t *codeCounters) get(mi, code int) prometheus.Counter {
	if code < 100 || code >= 600 {
		code = 599 // out of range codes are invalid anyway; keep labels bounded
	}
	slot := &t.slots[mi][code]
	if c := slot.Load(); c != nil {
		return *c
	}
	c := t.vec.WithLabelValues(methods[mi], strconv.Itoa(code))
	slot.CompareAndSwap(nil, &c)
	return *slot.Load()
}

// sentCode is the status code fasthttp sends for ctx's request once the
// handler returns. A timeout (TimeoutHandler, TimeoutWithCodeHandler,
// ctx.TimeoutError*) replaces the response: fasthttp sends the timeout
// response, and ctx.Response, which the timed-out handler may still be
// writing in its goroutine, is not read at all. Inside a timeout handler's
// goroutine the timeout response is not read either: the timeout handler
// sets it from its own goroutine, with nothing ordering the two, and the
// response the inner handler made is all this goroutine can know.
func sentCode(ctx *fasthttp.RequestCtx, insideTimeoutHandler bool) int {
	if !insideTimeoutHandler {
		if r := ctx.LastTimeoutErrorResponse(); r != nil {
			return r.StatusCode()
		}
	}
	return ctx.Response.StatusCode()
}

// position records whether a Metrics handler runs inside the goroutine of
// fasthttp's TimeoutWithCodeHandler (which TimeoutHandler is too).
type position struct {
	known, inside atomic.Bool
}

func (p *position) insideTimeoutHandler() bool {
	if p.known.Load() {
		return p.inside.Load()
	}
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	inside := false
	for {
		f, more := frames.Next()
		// The goroutine's function, fasthttp's closure, is named after
		// wherever the compiler inlined TimeoutWithCodeHandler
		// (main.TimeoutHandler.TimeoutWithCodeHandler.func2.1, say); its
		// file is fasthttp's.
		if strings.Contains(f.Function, "TimeoutWithCodeHandler.func") && strings.Contains(f.File, "valyala/fasthttp") {
			inside = true
			break
		}
		if !more {
			break
		}
	}
	p.inside.Store(inside)
	p.known.Store(true)
	return inside
}

// ErrorHandler returns a fasthttp.Server.ErrorHandler that counts in
// connopt_http_requests_total (as Metrics does, on the same registry) the
// responses fasthttp sends for requests it could not read or parse: those
// never reach a handler, so no middleware sees them. next writes the
// response, as Server.ErrorHandler would; nil means fasthttp's default
// (431 for a header too large, 408 for a read timeout, 400 otherwise).
func ErrorHandler(reg prometheus.Registerer, next func(*fasthttp.RequestCtx, error)) func(*fasthttp.RequestCtx, error) {
	if next == nil {
		next = defaultErrorHandler
	}
	counter := newCodeCounters(requestsTotal(reg)).get
	return func(ctx *fasthttp.RequestCtx, err error) {
		next(ctx, err)
		counter(methodIndex(ctx.Method()), ctx.Response.StatusCode()).Inc()
	}
}

// defaultErrorHandler is fasthttp's (unexported there), as of v1.78.
func defaultErrorHandler(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var oe *net.OpError
	switch {
	case errors.As(err, &small):
		ctx.Error("Too big request header", fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.As(err, &oe) && oe.Timeout():
		ctx.Error("Request timeout", fasthttp.StatusRequestTimeout)
	default:
		ctx.Error("Error when parsing request", fasthttp.StatusBadRequest)
	}
}

// atomicGauge is a gauge kept in an int64: Add is one atomic instruction.
type atomicGauge struct {
	n    atomic.Int64
	desc *prometheus.Desc
}

func (g *atomicGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }
func (g *atomicGauge) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(g.n.Load()))
}

// Recover turns a panic in the handler into a 500 response and a count
// (connopt_http_panics_total), logs it with the request's method and path,
// and keeps the server serving. The connection is closed after the 500, as
// the handler may have left the request half read. A nil logger logs
// nothing.
func Recover(reg prometheus.Registerer, logger fasthttp.Logger) Middleware {
	panics := register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "connopt_http_panics_total", Help: "Handler panics turned into 500 responses.",
	}))
	return func(next fasthttp.RequestHandler) fasthttp.RequestHandler {
		return func(ctx *fasthttp.RequestCtx) {
			defer func() {
				if p := recover(); p != nil {
					panics.Inc()
					if logger != nil {
						logger.Printf("panic serving %s %s: %v", ctx.Method(), ctx.Path(), p)
					}
					ctx.ResetBody()
					ctx.Error(fasthttp.StatusMessage(fasthttp.StatusInternalServerError), fasthttp.StatusInternalServerError)
					ctx.SetConnectionClose()
				}
			}()
			next(ctx)
		}
	}
}

// Limit bounds the requests in flight through it to max. A request beyond
// the bound is answered at once with 503 and a Retry-After header (whole
// seconds, at least 1) and counted (connopt_http_limited_total); nothing is
// queued.
func Limit(max int, retryAfter time.Duration, reg prometheus.Registerer) Middleware {
	limited := register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "connopt_http_limited_total", Help: "Requests refused with 503 because the in-flight limit was reached.",
	}))
	ra := strconv.Itoa(max1(int(retryAfter / time.Second)))
	return func(next fasthttp.RequestHandler) fasthttp.RequestHandler {
		var inFlight atomic.Int64
		return func(ctx *fasthttp.RequestCtx) {
			if inFlight.Add(1) > int64(max) {
				inFlight.Add(-1)
				limited.Inc()
				// Error resets the response, so the header comes after it.
				ctx.Error(fasthttp.StatusMessage(fasthttp.StatusServiceUnavailable), fasthttp.StatusServiceUnavailable)
				ctx.Response.Header.Set("Retry-After", ra)
				return
			}
			defer inFlight.Add(-1)
			next(ctx)
		}
	}
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}
