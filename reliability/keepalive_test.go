package reliability

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/nsexec"
	"github.com/connopt/connopt/internal/testns"
	"github.com/connopt/connopt/sockopt"
)

// What the keep-alive setsockopts on a dialed socket buy: a request in
// flight to an upstream whose host vanished after it received the request
// (its replies now go nowhere, as when a machine or its link dies) fails
// with ETIMEDOUT once the probes go unanswered, on connopt's client as on
// stock net.Dialer with the same settings; with keep-alive off, the read
// waits for the response until the caller's own timeout, which fasthttp's
// clients leave unset by default (ReadTimeout 0). The probes are timed
// short here (1 s idle, 1 s apart, 2 of them); the defaults, net's, are
// 15 s, 15 s and 9: about 150 s.
func TestKeepAliveFindsVanishedUpstream(t *testing.T) {
	a := testns.New(t, nil) // the client
	b := testns.New(t, nil) // the upstream that vanishes
	veth(t, "ka", a, "198.18.8.1/24", b, "198.18.8.2/24")

	var ln net.Listener
	if err := nsexec.Do(b.Name, func() (err error) { ln, err = net.Listen("tcp4", "198.18.8.2:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	received := make(chan struct{}, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // reads the request (so it is acknowledged) and never answers
				defer c.Close()
				buf := make([]byte, 64)
				if _, err := io.ReadFull(c, buf[:len("GET / HTTP/1.1\r\n\r\n")]); err == nil {
					received <- struct{}{}
				}
				io.Copy(io.Discard, c)
			}()
		}
	}()

	probes := sockopt.Options{KeepAlive: time.Second, KeepAliveInterval: time.Second, KeepAliveCount: 2}
	off := sockopt.Options{KeepAlive: -1}
	stock := func(o sockopt.Options) func() (net.Conn, error) {
		return func() (c net.Conn, err error) {
			nd := &net.Dialer{KeepAliveConfig: o.KeepAliveConfig()}
			if !o.KeepAliveConfig().Enable {
				nd.KeepAlive = -1
			}
			err = nsexec.Do(a.Name, func() error { c, err = nd.Dial("tcp4", ln.Addr().String()); return err })
			return c, err
		}
	}
	connopt := func(o sockopt.Options) func() (net.Conn, error) {
		return func() (net.Conn, error) {
			d, err := client.NewDialer(client.Config{Namespace: a.Name, Options: o, PoolSize: 2})
			if err != nil {
				return nil, err
			}
			t.Cleanup(func() { d.Close() })
			return d.Dial(ln.Addr().String())
		}
	}
	// Each case: its connection sends a request and waits; then the
	// upstream's replies are blackholed, for all cases at once.
	type result struct {
		err  error
		took time.Duration
	}
	cases := []struct {
		name string
		dial func() (net.Conn, error)
		ka   bool
	}{
		{"stock net.Dialer, keep-alive 1s/1s/2", stock(probes), true},
		{"connopt client.Dialer, keep-alive 1s/1s/2", connopt(probes), true},
		{"connopt client.Dialer, keep-alive off", connopt(off), false},
	}
	const wait = 6 * time.Second // the caller's own timeout, for the case that never learns
	results := make([]chan result, len(cases))
	start := make(chan time.Time)
	for i, tc := range cases {
		c, err := tc.dial()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		select {
		case <-received:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the upstream did not get the request", tc.name)
		}
		results[i] = make(chan result, 1)
		go func() {
			t0 := <-start
			c.SetReadDeadline(t0.Add(wait))
			_, err := c.Read(make([]byte, 1))
			results[i] <- result{err, time.Since(t0)}
		}()
	}
	time.Sleep(100 * time.Millisecond) // the requests' ACKs are in
	ipCmd(t, "-n", b.Name, "route", "add", "blackhole", "198.18.8.1/32")
	now := time.Now()
	for range cases {
		start <- now
	}
	for i, tc := range cases {
		r := <-results[i]
		t.Logf("%s: %v after %v", tc.name, r.err, r.took.Round(10*time.Millisecond))
		switch {
		case tc.ka && !errors.Is(r.err, syscall.ETIMEDOUT):
			t.Errorf("%s: %v, want ETIMEDOUT from the unanswered probes", tc.name, r.err)
		case tc.ka && r.took > wait/2:
			t.Errorf("%s: the probes took %v to give up (1 s idle + 2 × 1 s)", tc.name, r.took)
		case !tc.ka && !errors.Is(r.err, os.ErrDeadlineExceeded):
			t.Errorf("%s: %v, want the caller's deadline: nothing else ends the wait", tc.name, r.err)
		}
	}
}
