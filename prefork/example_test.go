package prefork_test

import (
	"context"
	"log"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/prefork"
	"github.com/connopt/connopt/server"
)

// Plain fasthttp in four processes: the parent supervises (SIGHUP hands over
// to a new binary, SIGINT/SIGTERM stops), each child serves the socket it
// inherited and, told to stop, drains as package server does. Not run here: it would start copies of the test binary.
func Example_fasthttp() {
	handler := func(ctx *fasthttp.RequestCtx) { ctx.WriteString("Hello, World!") }
	err := prefork.ServeFasthttp("tcp", ":8080", prefork.Config{Children: 4}, &fasthttp.Server{Handler: handler})
	if err != nil {
		log.Fatal(err)
	}
}

// The same with package server, whose stop drains keep-alive connections.
func Example_server() {
	handler := func(ctx *fasthttp.RequestCtx) { ctx.WriteString("Hello, World!") }
	srv, err := server.New(handler, server.Config{Addr: ":8080", Prefork: &prefork.Config{Children: 4}})
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(srv.Run(context.Background())) // parent: supervises; child: serves
}
