package listener

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/testkit"
)

// The scenarios below run on stock net.Listen (the control), on Listen's
// default *net.TCPConn and on WrapConns, and must look the same to a user.

type listenKind struct {
	name   string
	listen func(t *testing.T) net.Listener
}

func listenKinds() []listenKind {
	return []listenKind{
		{"stock", func(t *testing.T) net.Listener {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			return ln
		}},
		{"default", func(t *testing.T) net.Listener { return listenT(t, Config{}) }},
		{"WrapConns", func(t *testing.T) net.Listener { return listenT(t, Config{WrapConns: true}) }},
	}
}

func eachListener(t *testing.T, f func(t *testing.T, lk listenKind)) {
	for _, lk := range listenKinds() {
		t.Run(lk.name, func(t *testing.T) { f(t, lk) })
	}
}

// Issue 13, item 1, as fasthttp reaches it: on a keep-alive connection with
// WriteTimeout, the second response is a large SetBodyStream written while
// the first request's write deadline passes. Every byte must arrive.
func TestFasthttpStreamAfterEarlierDeadline(t *testing.T) {
	const size = 16 << 20
	body := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	want := sha256.Sum256(body)
	eachListener(t, func(t *testing.T, lk listenKind) {
		ln := lk.listen(t)
		s := &fasthttp.Server{
			Handler: func(ctx *fasthttp.RequestCtx) {
				if string(ctx.Path()) == "/big" {
					ctx.SetBodyStream(struct{ io.Reader }{bytes.NewReader(body)}, size)
					return
				}
				ctx.WriteString("small")
			},
			ReadTimeout:  5 * time.Second,
			WriteTimeout: 2 * time.Second,
			IdleTimeout:  5 * time.Second,
			Logger:       testkit.Logger{T: t},
		}
		go s.Serve(ln)
		t.Cleanup(func() { s.Shutdown() })

		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 64<<10)
		if _, err := get(c, br, "/small", ""); err != nil { // write deadline: t0+2 s
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		// This response's write deadline is t0+3 s; the first one's passes
		// while the server is still writing, because the client reads only
		// from t0+2.2 s.
		fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
		time.Sleep(1200 * time.Millisecond)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		resp.SkipBody = true
		if err := resp.Header.Read(br); err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, io.LimitReader(br, int64(resp.Header.ContentLength())))
		if n != size || err != nil || !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("received %d of %d bytes (%v), checksum equal: %v", n, size, err, bytes.Equal(h.Sum(nil), want[:]))
		}
	})
}

// echoUpgrade is a net/http handler that switches to an echo protocol after
// a Hijack, as WebSocket servers do.
func echoUpgrade(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "echo" {
		http.Error(w, "upgrade required", http.StatusUpgradeRequired)
		return
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	rw.Flush()
	io.Copy(conn, io.MultiReader(io.LimitReader(rw, int64(rw.Reader.Buffered())), conn))
}

func httpServe(t *testing.T, ln net.Listener, h http.Handler) {
	s := &http.Server{Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
}

// upgradeEcho upgrades a connection to addr and counts the messages echoed.
func upgradeEcho(t *testing.T, addr string, msgs int) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	echoed := 0
	for i := range msgs {
		msg := fmt.Sprintf("message %d\n", i)
		time.Sleep(20 * time.Millisecond)
		if _, err := io.WriteString(c, msg); err != nil {
			break
		}
		line, err := br.ReadString('\n')
		if err != nil || line != msg {
			break
		}
		echoed++
	}
	return echoed
}

// Issue 13, item 5: net/http sets a past deadline and clears it around
// every Hijack; upgraded connections must keep working, directly and
// through httputil.ReverseProxy.
func TestNetHTTPUpgrade(t *testing.T) {
	eachListener(t, func(t *testing.T, lk listenKind) {
		back := lk.listen(t)
		httpServe(t, back, http.HandlerFunc(echoUpgrade))
		if n := upgradeEcho(t, back.Addr().String(), 10); n != 10 {
			t.Fatalf("hijacked echo: %d of 10 messages", n)
		}
		front := lk.listen(t)
		u, _ := url.Parse("http://" + back.Addr().String())
		httpServe(t, front, httputil.NewSingleHostReverseProxy(u))
		if n := upgradeEcho(t, front.Addr().String(), 10); n != 10 {
			t.Fatalf("echo through ReverseProxy: %d of 10 messages", n)
		}
	})
}

// A proxy copying both ways, with a read deadline on the upstream side,
// returns when the upstream times out (it used to spin a core).
func TestProxyCopyUpstreamTimeout(t *testing.T) {
	eachListener(t, func(t *testing.T, lk listenKind) {
		ln := lk.listen(t)
		upLn := lk.listen(t)
		go func() {
			if c, err := upLn.Accept(); err == nil {
				defer c.Close()
				io.Copy(io.Discard, c) // a silent upstream
			}
		}()
		done := make(chan string, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				done <- err.Error()
				return
			}
			defer c.Close()
			up, err := net.Dial("tcp", upLn.Addr().String())
			if err != nil {
				done <- err.Error()
				return
			}
			defer up.Close()
			c.SetWriteDeadline(time.Now().Add(time.Hour))
			up.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			start := time.Now()
			_, err = io.Copy(c, up)
			done <- fmt.Sprintf("%v after %v", err, time.Since(start).Round(100*time.Millisecond))
		}()
		cc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		cc.Write([]byte("x"))
		select {
		case got := <-done:
			if !strings.Contains(got, "i/o timeout after 200ms") {
				t.Fatalf("io.Copy(client, upstream): %s; want the upstream's timeout after 200ms", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("io.Copy(client, upstream) did not return after the upstream's read deadline")
		}
	})
}
