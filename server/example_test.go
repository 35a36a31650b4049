package server_test

import (
	"context"
	"fmt"
	"log"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/server"
)

func ExampleNew() {
	h := func(ctx *fasthttp.RequestCtx) { ctx.WriteString("hello") }
	srv, err := server.New(h, server.Config{Addr: "127.0.0.1:0", DisableSignals: true}) // listens now
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }() // until ctx (or SIGINT/SIGTERM without DisableSignals)

	status, body, err := fasthttp.Get(nil, "http://"+srv.Addr().String()+"/")
	fmt.Println(status, string(body), err)
	status, _, _ = fasthttp.Get(nil, "http://"+srv.Addr().String()+"/metrics")
	fmt.Println("metrics:", status)
	stop()
	fmt.Println("stopped:", <-done)
	// Output:
	// 200 hello <nil>
	// metrics: 200
	// stopped: <nil>
}
