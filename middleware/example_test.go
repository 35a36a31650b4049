package middleware_test

import (
	"fmt"
	"log"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/middleware"
)

func ExampleChain() {
	reg := prometheus.NewRegistry()
	handler := func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/panic" {
			panic("bug")
		}
		ctx.WriteString("ok")
	}
	h := middleware.Chain(handler,
		middleware.Recover(reg, log.Default()),   // panic -> 500, logged, counted, server lives
		middleware.Metrics(reg),                  // requests, durations, in flight
		middleware.Limit(1000, time.Second, reg)) // 1001st concurrent request -> 503 + Retry-After: 1

	for _, path := range []string{"/", "/panic"} {
		var ctx fasthttp.RequestCtx
		ctx.Request.SetRequestURI(path)
		h(&ctx)
		fmt.Println(path, ctx.Response.StatusCode())
	}
	// Output:
	// / 200
	// /panic 500
}
