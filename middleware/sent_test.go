package middleware

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/testkit"
)

// For every fasthttp path that replaces the handler's response, the code
// Metrics counts is the one the client reads off the wire.
func TestMetricsCountsWhatIsSent(t *testing.T) {
	slow := func(ctx *fasthttp.RequestCtx) {
		time.Sleep(200 * time.Millisecond)
		ctx.WriteString("too late") // a 200 nobody receives
	}
	for _, tc := range []struct {
		name    string
		raw     string // the request, as bytes on the wire
		handler fasthttp.RequestHandler
	}{
		{"TimeoutWithCodeHandler", "GET / HTTP/1.1\r\nHost: t\r\n\r\n",
			Chain(fasthttp.TimeoutWithCodeHandler(slow, 20*time.Millisecond, "slow", fasthttp.StatusServiceUnavailable))},
		{"TimeoutHandler", "GET / HTTP/1.1\r\nHost: t\r\n\r\n",
			Chain(fasthttp.TimeoutHandler(slow, 20*time.Millisecond, "slow"))},
		{"ctx.TimeoutError", "GET / HTTP/1.1\r\nHost: t\r\n\r\n", func(ctx *fasthttp.RequestCtx) {
			ctx.SetStatusCode(200)
			ctx.TimeoutError("gave up")
		}},
		{"Hijack", "GET / HTTP/1.1\r\nHost: t\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", func(ctx *fasthttp.RequestCtx) {
			ctx.SetStatusCode(fasthttp.StatusSwitchingProtocols)
			ctx.Response.Header.Set("Upgrade", "x")
			ctx.Hijack(func(c net.Conn) { c.Write([]byte("raw bytes")) })
		}},
		{"ErrorHandler", "NOT HTTP AT ALL\r\n\r\n", func(ctx *fasthttp.RequestCtx) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			s := &fasthttp.Server{Handler: Chain(tc.handler, Metrics(reg)), ErrorHandler: ErrorHandler(reg, nil), Logger: testkit.Quiet{}}
			go s.Serve(ln)
			defer s.Shutdown()
			c, err := net.Dial("tcp4", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte(tc.raw)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			sent := strconv.Itoa(resp.StatusCode)
			var counted []string
			testkit.Eventually(t, "the request to be counted", func() bool { return testutil.CollectAndCount(reg, "connopt_http_requests_total") > 0 })
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				if mf.GetName() != "connopt_http_requests_total" {
					continue
				}
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetName() == "code" {
							counted = append(counted, l.GetValue()+"×"+strconv.Itoa(int(m.GetCounter().GetValue())))
						}
					}
				}
			}
			if strings.Join(counted, ",") != sent+"×1" {
				t.Fatalf("the client received %s; counted %v", sent, counted)
			}
		})
	}
}

// Metrics inside a timeout handler runs in the goroutine that handler
// starts, while fasthttp sets the timeout response from its own: Metrics
// must not read it there (under -race, reading it was a data race the
// detector reports), and counts the response the inner handler made.
func TestMetricsInsideTimeoutHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	inner := Chain(func(ctx *fasthttp.RequestCtx) {
		time.Sleep(50 * time.Millisecond)
		ctx.SetStatusCode(fasthttp.StatusAccepted)
	}, Metrics(reg))
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fasthttp.Server{Handler: fasthttp.TimeoutHandler(inner, 10*time.Millisecond, "slow"), Logger: testkit.Quiet{}}
	go s.Serve(ln)
	defer s.Shutdown()
	const n = 5
	for range n {
		if status, _, err := fasthttp.Get(nil, "http://"+ln.Addr().String()+"/"); err != nil || status != fasthttp.StatusRequestTimeout {
			t.Fatalf("%d %v, want the timeout handler's 408", status, err)
		}
	}
	testkit.Eventually(t, "the inner handlers to finish", func() bool {
		return testutil.ToFloat64(requestsTotal(reg).WithLabelValues("GET", "202")) == n
	})
}
