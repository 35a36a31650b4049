package middleware

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// BenchmarkMetrics is the per-request cost of the Metrics middleware around
// an empty handler, against the bare handler.
func BenchmarkMetrics(b *testing.B) {
	for _, wrap := range []bool{false, true} {
		name := "bare"
		h := fasthttp.RequestHandler(func(ctx *fasthttp.RequestCtx) {})
		if wrap {
			name = "metrics"
			h = Chain(h, Metrics(prometheus.NewRegistry()))
		}
		b.Run(name, func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			ctx.Request.Header.SetMethod("GET")
			b.ReportAllocs()
			for b.Loop() {
				h(&ctx)
			}
		})
	}
}
