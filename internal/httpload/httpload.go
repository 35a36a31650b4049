// Package httpload is the load connopt's hand-over test and benchmark put
// on a server while it changes processes: workers making GETs on new
// connections (read with net/http's parser) and workers making keep-alive
// GETs through fasthttp.HostClient, none retrying a failed request, each
// outcome counted.
package httpload

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Load is a running load; Stop ends it and returns what it saw.
type Load struct {
	OK, FailedNew, FailedKeepAlive, Resets atomic.Int64

	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []string
	seen map[string]bool
}

// Start runs workers new-connection and workers keep-alive GET loops
// against addr, dialing with dial. A response counts as answered when its
// status is 200 and its body starts with prefix.
func Start(addr string, dial fasthttp.DialFunc, workers int, prefix string) *Load {
	l := &Load{stop: make(chan struct{}), seen: map[string]bool{}}
	loop := func(do func() ([]byte, error), keepAlive bool) {
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			body, err := do()
			if err == nil && !strings.HasPrefix(string(body), prefix) {
				err = fmt.Errorf("body %q", body)
			}
			l.record(keepAlive, body, err)
		}
	}
	for range workers {
		l.wg.Go(func() { loop(func() ([]byte, error) { return newConnGet(dial, addr) }, false) })
		hc := &fasthttp.HostClient{Addr: addr, Dial: dial, MaxConns: 1, MaxIdemponentCallAttempts: 1,
			ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
		l.wg.Go(func() {
			defer hc.CloseIdleConnections()
			loop(func() ([]byte, error) {
				status, body, err := hc.Get(nil, "http://"+addr+"/")
				if err == nil && status != 200 {
					err = fmt.Errorf("status %d", status)
				}
				return body, err
			}, true)
		})
	}
	return l
}

func (l *Load) record(keepAlive bool, body []byte, err error) {
	if err == nil {
		l.OK.Add(1)
		l.mu.Lock()
		l.seen[string(body)] = true
		l.mu.Unlock()
		return
	}
	if keepAlive {
		l.FailedKeepAlive.Add(1)
	} else {
		l.FailedNew.Add(1)
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		l.Resets.Add(1)
	}
	l.mu.Lock()
	if len(l.errs) < 5 {
		l.errs = append(l.errs, err.Error())
	}
	l.mu.Unlock()
}

// Stop ends the workers and waits for them.
func (l *Load) Stop() {
	close(l.stop)
	l.wg.Wait()
}

// Failed is every failed request.
func (l *Load) Failed() int64 { return l.FailedNew.Load() + l.FailedKeepAlive.Load() }

// Errors are the first few errors seen.
func (l *Load) Errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errs...)
}

// Bodies is how many different bodies answered (a server that names its
// process in the body: how many processes answered).
func (l *Load) Bodies() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

// newConnGet is one GET on a connection of its own (Connection: close).
func newConnGet(dial fasthttp.DialFunc, addr string) ([]byte, error) {
	c, err := dial(addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return body, err
}
