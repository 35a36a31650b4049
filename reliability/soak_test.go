package reliability

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/leakcheck"
	"github.com/connopt/connopt/internal/testns"
	"github.com/connopt/connopt/server"
)

// TestSoak runs mixed keep-alive and churn load through server (listening
// in a namespace) and client (dialing into it) for CONNOPT_SOAK (make soak:
// 10m), then checks that descriptors, goroutines and heap are back to where
// they started. Skipped unless CONNOPT_SOAK is set.
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("CONNOPT_SOAK"))
	if err != nil || d <= 0 {
		t.Skip("set CONNOPT_SOAK=10m (make soak) to run the soak")
	}
	ns := testns.New(t, nil)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	fds, gs := leakcheck.FDs(t), runtime.NumGoroutine()

	var ok, failed atomic.Int64
	func() {
		s, stop := startServer(t, func(ctx *fasthttp.RequestCtx) { ctx.WriteString("soak") },
			server.Config{Namespace: ns.Name, Shards: 2})
		defer stop()
		dialer, err := client.NewDialer(client.Config{Namespace: ns.Name})
		if err != nil {
			t.Fatal(err)
		}
		defer dialer.Close()
		hc := dialer.HostClient(s.Addr().String())
		hc.MaxIdleConnDuration = 100 * time.Millisecond
		defer hc.CloseIdleConnections()

		end := time.Now().Add(d)
		var wg sync.WaitGroup
		for g := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				for i := 0; i < 50_000_000 && time.Now().Before(end); i++ {
					req.Reset()
					req.SetRequestURI("http://soak/")
					if g < 2 {
						req.SetConnectionClose() // churn
					}
					if err := hc.DoTimeout(req, resp, 5*time.Second); err != nil || string(resp.Body()) != "soak" {
						failed.Add(1)
						continue
					}
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
	}()
	t.Logf("soak %v: %d requests, %d failed", d, ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
	leakcheck.Settle(t, fds, gs)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 16<<20 {
		t.Fatalf("heap grew %d MiB over the soak", grown>>20)
	}
}
