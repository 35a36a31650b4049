package client

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/testkit"
)

// An upstream that closes keep-alive connections after 5 s idle (Node.js's
// and Apache's default): after a 5.3 s pause, stock fasthttp.HostClient
// (MaxIdleConnDuration 10 s) sends the POST on the connection the upstream
// closed and fails; the clients built here closed it at
// DefaultMaxIdleConnDuration and dial afresh, even without the peer watch.
func TestDefaultIdleBelowCommonUpstreams(t *testing.T) {
	if DefaultMaxIdleConnDuration >= 5*time.Second {
		t.Fatalf("DefaultMaxIdleConnDuration %v is not below 5 s", DefaultMaxIdleConnDuration)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.WriteString("ok") },
		IdleTimeout: 5 * time.Second, Logger: testkit.Quiet{}}
	go srv.Serve(ln)
	defer srv.Shutdown()
	addr := ln.Addr().String()

	d, err := NewDialer(Config{DisablePeerWatch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	clients := map[string]*fasthttp.HostClient{
		"stock":   {Addr: addr},
		"connopt": d.HostClient(addr),
	}
	errs := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, hc := range clients {
		wg.Go(func() {
			defer hc.CloseIdleConnections()
			if _, _, err := hc.Get(nil, "http://"+addr+"/"); err != nil {
				t.Errorf("%s: first GET: %v", name, err)
				return
			}
			time.Sleep(5300 * time.Millisecond)
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + addr + "/")
			req.Header.SetMethod("POST")
			req.SetBodyString("x")
			err := hc.Do(req, resp)
			mu.Lock()
			errs[name] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	if errs["connopt"] != nil {
		t.Errorf("connopt: POST after 5.3 s idle: %v", errs["connopt"])
	}
	if errs["stock"] == nil {
		t.Log("stock fasthttp.HostClient's POST succeeded this time (it races the upstream's close)")
	} else {
		t.Logf("control: stock fasthttp.HostClient's POST: %v", errs["stock"])
	}
}
