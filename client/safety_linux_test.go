package client

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/testkit"
)

// checksumUpstream answers each request with 201 and "LENGTH SHA256" of the
// body it received, then closes the connection 20 ms later (the client has
// pooled it by then). closed counts the connections it closed.
type checksumUpstream struct {
	ln     net.Listener
	closed atomic.Int64
	mu     sync.Mutex
	puts   []string // the checksum of every PUT's body received
}

func (u *checksumUpstream) received() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.puts...)
}

func newChecksumUpstream(t *testing.T) *checksumUpstream {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &checksumUpstream{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				var req fasthttp.Request
				if err := req.Read(bufio.NewReader(c)); err != nil {
					return
				}
				sum := checksum(req.Body())
				if req.Header.IsPut() {
					u.mu.Lock()
					u.puts = append(u.puts, sum)
					u.mu.Unlock()
				}
				fmt.Fprintf(c, "HTTP/1.1 201 Created\r\nContent-Length: 73\r\n\r\n%s", sum)
				time.Sleep(20 * time.Millisecond)
				u.closed.Add(1)
			})
		}
	})
	return u
}

func checksum(b []byte) string { return fmt.Sprintf("%8d %x", len(b), sha256.Sum256(b)) }

// bodyKinds are every way fasthttp has to give a request a body; each sets
// req's body to payload and returns what the upstream must receive.
var bodyKinds = []struct {
	name   string
	stream bool
	set    func(req *fasthttp.Request, payload []byte) []byte
}{
	{"SetBody", false, func(req *fasthttp.Request, p []byte) []byte { req.SetBody(p); return p }},
	{"SetBodyStream/known", true, func(req *fasthttp.Request, p []byte) []byte {
		req.SetBodyStream(bytes.NewReader(p), len(p))
		return p
	}},
	{"SetBodyStream/unknown", true, func(req *fasthttp.Request, p []byte) []byte {
		req.SetBodyStream(io.MultiReader(bytes.NewReader(p)), -1) // chunked
		return p
	}},
	{"SetBodyStreamWriter", true, func(req *fasthttp.Request, p []byte) []byte {
		req.SetBodyStreamWriter(func(w *bufio.Writer) { w.Write(p) })
		return p
	}},
	{"multipart", false, func(req *fasthttp.Request, p []byte) []byte {
		body := multipartBody(req, p)
		req.SetBody(body)
		return body
	}},
	{"multipart/stream", true, func(req *fasthttp.Request, p []byte) []byte {
		body := multipartBody(req, p)
		req.SetBodyStream(bytes.NewReader(body), len(body))
		return body
	}},
}

// multipartBody is a multipart/form-data body carrying p as a file; req
// gets its boundary.
func multipartBody(req *fasthttp.Request, p []byte) []byte {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("file", "payload.bin")
	fw.Write(p)
	mw.Close()
	req.Header.SetMultipartFormBoundary(mw.Boundary())
	return buf.Bytes()
}

// A PUT given a pooled connection the upstream closed while idle, for every
// body kind and two sizes, through stock fasthttp.HostClient (the control)
// and connopt's: no request reaches the upstream with a body other than
// the caller's, and a success is reported only for a body the upstream
// received whole (checksummed there). Bodies held in memory are written
// again on a new connection and succeed; a body stream cannot be read
// twice, so it fails as on stock.
func TestBodyNeverLostOnRedirect(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{1 << 10, 1 << 20} {
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		for _, kind := range bodyKinds {
			for _, who := range []string{"stock", "connopt"} {
				t.Run(fmt.Sprintf("%d/%s/%s", size, kind.name, who), func(t *testing.T) {
					u := newChecksumUpstream(t)
					addr := u.ln.Addr().String()
					var hc *fasthttp.HostClient
					var d *Dialer
					if who == "stock" {
						hc = &fasthttp.HostClient{Addr: addr}
					} else {
						d = newDialer(t, Config{})
						hc = d.HostClient(addr)
					}
					defer hc.CloseIdleConnections()
					hc.MaxConns = 1
					// A first request leaves the connection the PUT will be given.
					if status, _, err := hc.GetTimeout(nil, "http://"+addr+"/", 5*time.Second); err != nil || status != 201 {
						t.Fatalf("first GET: %d %v", status, err)
					}
					testkit.Eventually(t, "the upstream to close the pooled connection", func() bool { return u.closed.Load() == 1 })
					if d != nil {
						testkit.Eventually(t, "the watch to see it", func() bool { return d.Stats().GoneIdle == 1 })
					} else {
						time.Sleep(20 * time.Millisecond)
					}
					req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
					defer fasthttp.ReleaseRequest(req)
					defer fasthttp.ReleaseResponse(resp)
					req.SetRequestURI("http://" + addr + "/upload")
					req.Header.SetMethod("PUT")
					want := checksum(kind.set(req, payload))
					err := hc.DoTimeout(req, resp, 10*time.Second)
					switch {
					case err == nil && (resp.StatusCode() != 201 || string(resp.Body()) != want):
						t.Fatalf("reported %d with the upstream having received %q; sent %q", resp.StatusCode(), resp.Body(), want)
					case err != nil && who == "connopt" && !kind.stream:
						t.Fatalf("a body held in memory was not written again on a new connection: %v", err)
					}
					// Nothing ever reached the upstream with another body
					// than the caller's.
					for _, got := range u.received() {
						if got != want {
							t.Fatalf("the upstream received a PUT with body %q; the caller gave %q", got, want)
						}
					}
					t.Logf("%v", err)
				})
			}
		}
	}
}

// An upstream that answers a large POST without reading its body and
// closes (net/http does so for a body it does not read: here a 413) has
// processed the request, though the client's write then fails with a
// reset. Stock fasthttp.HostClient (the control) sends it once; so must
// connopt, watch or not.
func TestEarlyAnswerNotResent(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var processed atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		processed.Add(1)
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()
	body := bytes.Repeat([]byte("x"), 32<<20)
	for _, who := range []string{"stock", "connopt", "connopt/no-watch"} {
		var hc *fasthttp.HostClient
		switch who {
		case "stock":
			hc = &fasthttp.HostClient{Addr: addr}
		default:
			hc = newDialer(t, Config{DisablePeerWatch: strings.HasSuffix(who, "no-watch")}).HostClient(addr)
		}
		for _, method := range []string{"POST", "PATCH"} {
			before := processed.Load()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			req.SetRequestURI("http://" + addr + "/")
			req.Header.SetMethod(method)
			req.SetBody(body)
			err := hc.DoTimeout(req, resp, 20*time.Second)
			fasthttp.ReleaseRequest(req)
			fasthttp.ReleaseResponse(resp)
			if n := processed.Load() - before; n != 1 {
				t.Errorf("%s, %s: the upstream processed it %d times (%v); want once", who, method, n, err)
			} else {
				t.Logf("%s, %s: processed once; the client saw %v", who, method, err)
			}
		}
		hc.CloseIdleConnections()
	}
}

// One failed request to a broken upstream through a fasthttp.Client leaves
// the idle connections of a healthy upstream alone: stock (the control)
// and connopt re-dial none of them.
func TestDeadHostKeepsOtherPools(t *testing.T) {
	healthy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	s := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) { time.Sleep(20 * time.Millisecond); hello(ctx) },
		ConnState: func(_ net.Conn, st fasthttp.ConnState) {
			if st == fasthttp.StateNew {
				accepted.Add(1)
			}
		},
		Logger: testkit.Quiet{},
	}
	go s.Serve(healthy)
	defer s.Shutdown()
	// The broken upstream reads a request and closes without an answer.
	broken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer broken.Close()
	go func() {
		for {
			c, err := broken.Accept()
			if err != nil {
				return
			}
			go func() { c.Read(make([]byte, 4096)); c.Close() }()
		}
	}()
	const conns = 8
	burst := func(c *fasthttp.Client) {
		var wg sync.WaitGroup
		for range conns {
			wg.Go(func() {
				if status, _, err := c.GetTimeout(nil, "http://"+healthy.Addr().String()+"/", 5*time.Second); err != nil || status != 200 {
					t.Errorf("GET to the healthy upstream: %d %v", status, err)
				}
			})
		}
		wg.Wait()
	}
	for _, who := range []string{"stock", "connopt"} {
		c := &fasthttp.Client{}
		if who == "connopt" {
			c = newDialer(t, Config{}).Client()
		}
		burst(c)
		if _, _, err := c.GetTimeout(nil, "http://"+broken.Addr().String()+"/", 5*time.Second); err == nil {
			t.Fatalf("%s: the broken upstream answered", who)
		}
		before := accepted.Load()
		burst(c)
		if n := accepted.Load() - before; n != 0 {
			t.Errorf("%s: after one failure elsewhere, the healthy upstream's %d pooled connections were re-dialed %d times", who, conns, n)
		}
		c.CloseIdleConnections()
	}
}
