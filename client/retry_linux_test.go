package client

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/testkit"
)

// burstyGets fires workers GETs together, pauses 0–80 ms, and repeats, as a
// service between a bursty caller and an upstream that closes idle
// keep-alive connections quickly. It returns the failures and the first
// error.
func burstyGets(hc *fasthttp.HostClient, workers, rounds int) (failed int64, first error) {
	var fails atomic.Int64
	var once sync.Once
	rng := rand.New(rand.NewPCG(1, 2))
	for range rounds {
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, _, err := hc.GetTimeout(nil, "http://upstream/", 5*time.Second)
				if err != nil || status != 200 {
					fails.Add(1)
					once.Do(func() { first = err })
				}
			}()
		}
		wg.Wait()
		time.Sleep(time.Duration(rng.IntN(80)) * time.Millisecond)
	}
	return fails.Load(), first
}

// An upstream with a 50 ms idle timeout and 7 requests per connection;
// after an idle gap the pool holds several dead connections. Every GET
// must succeed; stock fasthttp (the control) is logged for comparison.
func TestIdleGapRetries(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int64
	s := &fasthttp.Server{
		Handler:            func(ctx *fasthttp.RequestCtx) { served.Add(1); hello(ctx) },
		IdleTimeout:        50 * time.Millisecond,
		MaxRequestsPerConn: 7,
		Logger:             testkit.Quiet{},
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.Shutdown() })

	const workers, rounds = 16, 125
	stock := &fasthttp.HostClient{Addr: ln.Addr().String()}
	stockFailed, stockErr := burstyGets(stock, workers, rounds/5)
	stock.CloseIdleConnections()
	t.Logf("stock fasthttp.HostClient: %d of %d GETs failed (%v)", stockFailed, workers*rounds/5, stockErr)

	for _, watch := range []bool{true, false} {
		d := newDialer(t, Config{DisablePeerWatch: !watch})
		hc := d.HostClient(ln.Addr().String())
		before := served.Load()
		failed, first := burstyGets(hc, workers, rounds)
		hc.CloseIdleConnections()
		if failed != 0 {
			t.Fatalf("watch %v: %d of %d GETs failed; first: %v", watch, failed, workers*rounds, first)
		}
		if got := served.Load() - before; got != workers*rounds {
			t.Fatalf("watch %v: upstream served %d GETs, want %d", watch, got, workers*rounds)
		}
		st := d.Stats()
		if st.DeadRetries+st.Redirected == 0 {
			t.Fatalf("watch %v: no dead pooled connection met: the scenario did not happen (%+v)", watch, st)
		}
		t.Logf("connopt, watch %v: 0 of %d GETs failed, %d redirected before writing, %d retried after a dead pooled connection, %d dials",
			watch, workers*rounds, st.Redirected, st.DeadRetries, st.Dials)
	}
}
