// Command gnet is the event-loop reference of the hello-world benchmark: a
// gnet v2 server that answers every complete request ("\r\n\r\n"-terminated;
// no HTTP parser, so it is a floor, not a competitor) with the same
// response and headers as the others, and closes after answering a request
// that asked for Connection: close. It lives in its own module so that
// connopt's go.mod does not depend on gnet.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
)

var (
	crlf2     = []byte("\r\n\r\n")
	connClose = []byte("Connection: close")
	date      atomic.Pointer[[]byte]
)

func response(closeConn bool) []byte {
	d := *date.Load()
	c := ""
	if closeConn {
		c = "Connection: close\r\n"
	}
	return fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nServer: bench\r\nDate: %s\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n%s\r\nHello, World!", d, c)
}

type server struct {
	gnet.BuiltinEventEngine
	addr string
}

func (s *server) OnBoot(gnet.Engine) gnet.Action {
	fmt.Printf("ready %s\n", s.addr)
	return gnet.None
}

func (s *server) OnTraffic(c gnet.Conn) gnet.Action {
	buf, _ := c.Peek(-1)
	var out []byte
	used, closeConn := 0, false
	for {
		i := bytes.Index(buf[used:], crlf2)
		if i < 0 {
			break
		}
		req := buf[used : used+i]
		used += i + len(crlf2)
		if bytes.Contains(req, connClose) {
			closeConn = true
			out = append(out, response(true)...)
			break
		}
		out = append(out, response(false)...)
	}
	c.Discard(used)
	if len(out) > 0 {
		c.Write(out)
	}
	if closeConn {
		return gnet.Close
	}
	return gnet.None
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address")
	flag.Parse()
	// gnet needs a concrete port: borrow a free one.
	ln, err := net.Listen("tcp4", *addr)
	if err != nil {
		log.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	tick := func() {
		d := []byte(time.Now().UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT"))
		date.Store(&d)
	}
	tick()
	go func() {
		for range time.Tick(time.Second) {
			tick()
		}
	}()
	log.Fatal(gnet.Run(&server{addr: a}, "tcp4://"+a, gnet.WithMulticore(false), gnet.WithNumEventLoop(1)))
}
