package middleware

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/testkit"
)

// serve runs h on a loopback listener until the test ends.
func serve(t *testing.T, h fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{Handler: h, Logger: testkit.Quiet{}}
	done := make(chan struct{})
	go func() { s.Serve(ln); close(done) }()
	t.Cleanup(func() { s.Shutdown(); <-done })
	return ln.Addr().String()
}

func do(t *testing.T, hc *fasthttp.HostClient, method, path string) (code int, retryAfter string) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI("http://test" + path)
	if err := hc.DoTimeout(req, resp, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode(), string(resp.Header.Peek("Retry-After"))
}

func TestMetricsCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := Chain(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/missing" {
			ctx.SetStatusCode(404)
		}
	}, Metrics(reg))
	hc := &fasthttp.HostClient{Addr: serve(t, h)}
	for range 7 {
		do(t, hc, "GET", "/")
	}
	for range 3 {
		do(t, hc, "POST", "/missing")
	}
	do(t, hc, "BREW", "/")
	want := `
# HELP connopt_http_requests_total HTTP requests handled, by method and status code.
# TYPE connopt_http_requests_total counter
connopt_http_requests_total{code="200",method="GET"} 7
connopt_http_requests_total{code="200",method="OTHER"} 1
connopt_http_requests_total{code="404",method="POST"} 3
# HELP connopt_http_requests_in_flight Requests being handled now.
# TYPE connopt_http_requests_in_flight gauge
connopt_http_requests_in_flight 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "connopt_http_requests_total", "connopt_http_requests_in_flight"); err != nil {
		t.Fatal(err)
	}
	// One histogram per method seen (GET, POST, OTHER), none for the
	// methods no request used.
	if n := testutil.CollectAndCount(reg, "connopt_http_request_duration_seconds"); n != 3 {
		t.Fatalf("%d duration series, want 3 (GET, POST, OTHER)", n)
	}
	// A second Metrics on the same registry shares the collectors.
	Metrics(reg)
}

func TestRecover(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := Chain(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/panic" {
			ctx.WriteString("partial")
			panic("boom")
		}
		ctx.WriteString("ok")
	}, Recover(reg, nil))
	hc := &fasthttp.HostClient{Addr: serve(t, h)}
	if code, _ := do(t, hc, "GET", "/panic"); code != 500 {
		t.Fatalf("panic answered %d", code)
	}
	if code, _ := do(t, hc, "GET", "/"); code != 200 {
		t.Fatalf("request after a panic answered %d", code)
	}
	if v := testutil.ToFloat64(collector(t, reg, "connopt_http_panics_total")); v != 1 {
		t.Fatalf("panics counted %v", v)
	}
}

func collector(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			v := mf.GetMetric()[0].GetCounter().GetValue()
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
			c.Add(v)
			return c
		}
	}
	t.Fatalf("no %s", name)
	return nil
}

// Limit: with 4 requests held in the handler, a fifth gets 503 with
// Retry-After at once; once they finish, requests pass again.
func TestLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	defer unblock() // a failing test must not leave the handlers, and Shutdown, waiting
	var entered sync.WaitGroup
	entered.Add(4)
	h := Chain(func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/hold" {
			entered.Done()
			<-release
		}
	}, Limit(4, 2*time.Second, reg))
	addr := serve(t, h)
	hc := &fasthttp.HostClient{Addr: addr, MaxConns: 16}
	var wg sync.WaitGroup
	codes := make(chan int, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _ := do(t, hc, "GET", "/hold")
			codes <- code
		}()
	}
	entered.Wait()
	start := time.Now()
	code, ra := do(t, hc, "GET", "/")
	if code != 503 || ra != "2" {
		t.Fatalf("over the limit: %d, Retry-After %q", code, ra)
	}
	if time.Since(start) > time.Second {
		t.Fatal("the refused request waited: Limit must not queue")
	}
	unblock()
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Fatalf("held request answered %d", c)
		}
	}
	for i := range 10 {
		if code, _ := do(t, hc, "GET", "/"); code != 200 {
			t.Fatalf("request %d after load dropped: %d", i, code)
		}
	}
	if v := testutil.ToFloat64(collector(t, reg, "connopt_http_limited_total")); v != 1 {
		t.Fatalf("limited counted %v", v)
	}
}

func TestChainOrder(t *testing.T) {
	var order []string
	mw := func(name string) Middleware {
		return func(next fasthttp.RequestHandler) fasthttp.RequestHandler {
			return func(ctx *fasthttp.RequestCtx) { order = append(order, name); next(ctx) }
		}
	}
	h := Chain(func(*fasthttp.RequestCtx) { order = append(order, "h") }, mw("a"), mw("b"))
	h(&fasthttp.RequestCtx{})
	if got := fmt.Sprint(order); got != "[a b h]" {
		t.Fatalf("order %s", got)
	}
}

// Whatever the order of Recover and Metrics, a panic is recorded as the
// 500 on the wire.
func TestPanicRecordedAsSent(t *testing.T) {
	boom := func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/panic" {
			panic("boom")
		}
	}
	for _, order := range []string{"Recover, Metrics, Limit", "Metrics, Recover, Limit"} {
		t.Run(order, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			mws := []Middleware{Recover(reg, nil), Metrics(reg), Limit(10, time.Second, reg)}
			if strings.HasPrefix(order, "Metrics") {
				mws[0], mws[1] = mws[1], mws[0]
			}
			hc := &fasthttp.HostClient{Addr: serve(t, Chain(boom, mws...))}
			for range 3 {
				if code, _ := do(t, hc, "GET", "/panic"); code != 500 {
					t.Fatalf("panic answered %d", code)
				}
			}
			do(t, hc, "GET", "/")
			want := `
# HELP connopt_http_requests_total HTTP requests handled, by method and status code.
# TYPE connopt_http_requests_total counter
connopt_http_requests_total{code="200",method="GET"} 1
connopt_http_requests_total{code="500",method="GET"} 3
`
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "connopt_http_requests_total"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A nil registry means the default one, for every middleware.
func TestNilRegistry(t *testing.T) {
	h := Chain(func(ctx *fasthttp.RequestCtx) {}, Recover(nil, nil), Metrics(nil), Limit(1, time.Second, nil))
	hc := &fasthttp.HostClient{Addr: serve(t, h)}
	do(t, hc, "GET", "/")
	for _, name := range []string{"connopt_http_requests_total", "connopt_http_panics_total", "connopt_http_limited_total"} {
		if n, err := testutil.GatherAndCount(prometheus.DefaultGatherer, name); err != nil || n == 0 {
			t.Errorf("%s in the default registry: %d series, %v", name, n, err)
		}
	}
}
