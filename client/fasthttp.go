package client

import (
	"errors"
	"io"
	"net"
	"runtime"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/tcpconn"
)

// HostClient returns a fasthttp.HostClient for addr that dials with d,
// moves requests off connections the upstream closed (Transport), retries
// as RetryIfErr says and closes connections idle for
// DefaultMaxIdleConnDuration. Adjust its other fields as usual.
func (d *Dialer) HostClient(addr string) *fasthttp.HostClient {
	hc := &fasthttp.HostClient{Addr: addr, DialTimeout: d.DialTimeout, Transport: d.Transport(),
		MaxIdleConnDuration: DefaultMaxIdleConnDuration}
	hc.RetryIfErr = d.RetryIfErr(hc)
	return hc
}

// Client returns a fasthttp.Client that dials with d, moves requests off
// connections the upstream closed, retries as RetryIfErr says and closes
// connections idle for DefaultMaxIdleConnDuration.
func (d *Dialer) Client() *fasthttp.Client {
	c := &fasthttp.Client{DialTimeout: d.DialTimeout, Transport: d.Transport(),
		MaxIdleConnDuration: DefaultMaxIdleConnDuration}
	c.RetryIfErr = d.RetryIfErr(c)
	return c
}

// maxRedirects bounds how many connections one request may find closed by
// the upstream before it is sent; after burstRedirects in a row the
// client's idle connections are closed (they died together, after an idle
// gap or an upstream restart) so the next one is dialed afresh.
const (
	maxRedirects   = 16
	burstRedirects = 3
)

// Transport returns the fasthttp.RoundTripper of the clients built here:
// fasthttp's own, except that a request whose connection turns out closed
// by the upstream before anything was written (ErrUnsent: the dialer saw
// its FIN or RST) is written again on another connection at once, whatever
// its method, without using one of fasthttp's attempts. Requests with a
// body stream are not repeated (the stream may have been read).
func (d *Dialer) Transport() fasthttp.RoundTripper { return redirectTransport{d} }

type redirectTransport struct{ d *Dialer }

func (t redirectTransport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	for i := 1; ; i++ {
		retry, err := fasthttp.DefaultTransport.RoundTrip(hc, req, resp)
		if err == nil || i > maxRedirects || req.IsBodyStream() || !errors.Is(err, ErrUnsent) {
			return retry, err
		}
		t.d.redirected.Add(1)
		if i == burstRedirects {
			hc.CloseIdleConnections()
		}
	}
}

// LBClient returns a fasthttp.LBClient over one HostClient per address.
func (d *Dialer) LBClient(addrs []string) *fasthttp.LBClient {
	lb := &fasthttp.LBClient{}
	for _, a := range addrs {
		lb.Clients = append(lb.Clients, d.HostClient(a))
	}
	return lb
}

// NewHostClient is NewDialer and HostClient in one. The dialer's socket
// pools are closed when the HostClient is garbage collected; keep a Dialer
// yourself to share one between clients or to close it at a chosen time.
func NewHostClient(addr string, cfg Config) (*fasthttp.HostClient, error) {
	d, err := NewDialer(cfg)
	if err != nil {
		return nil, err
	}
	hc := d.HostClient(addr)
	runtime.AddCleanup(hc, func(d *Dialer) { d.Close() }, d)
	return hc, nil
}

// NewClient is NewDialer and Client in one; see NewHostClient.
func NewClient(cfg Config) (*fasthttp.Client, error) {
	d, err := NewDialer(cfg)
	if err != nil {
		return nil, err
	}
	c := d.Client()
	runtime.AddCleanup(c, func(d *Dialer) { d.Close() }, d)
	return c, nil
}

// NewLBClient is NewDialer and LBClient in one; see NewHostClient.
func NewLBClient(addrs []string, cfg Config) (*fasthttp.LBClient, error) {
	d, err := NewDialer(cfg)
	if err != nil {
		return nil, err
	}
	lb := d.LBClient(addrs)
	runtime.AddCleanup(lb, func(d *Dialer) { d.Close() }, d)
	return lb, nil
}

// IdleCloser is what fasthttp's HostClient and Client have in common for
// RetryIfErr.
type IdleCloser interface{ CloseIdleConnections() }

// RetryIfErr returns the fasthttp.RetryIfErrFunc of the clients built here,
// for client (the HostClient or Client it is set on; nil is allowed). A
// pooled keep-alive connection is never probed before reuse; if the
// upstream closed it meanwhile, the request fails on write (EPIPE, reset)
// or on read (EOF, reset) and is retried when that is safe: always for
// idempotent methods (GET, HEAD, PUT, QUERY, OPTIONS, DELETE, TRACE), and
// for the others only when the write itself failed, so the request cannot
// have been processed. A POST whose write went through and whose response
// never came is not sent again.
//
// A dead pooled connection also closes client's other idle connections:
// upstreams close keep-alive connections by idle time (Node's 5 s, nginx's
// keepalive_timeout) or by count, so after an idle gap the pool holds
// several dead ones, and a retry that took the next pooled connection
// would likely spend its attempt on another. With the pool emptied, the
// retry dials afresh. Each such event counts in
// connopt_client_dead_connection_retries_total when a retry follows.
func (d *Dialer) RetryIfErr(client IdleCloser) fasthttp.RetryIfErrFunc {
	return func(req *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
		dead := errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) || tcpconn.IsPeerClosed(err)
		var oe *net.OpError
		failedWrite := dead && errors.As(err, &oe) && oe.Op == "write"
		switch {
		case errors.Is(err, ErrUnsent), idempotent(req):
			retry = true
		default:
			retry = failedWrite
		}
		if dead {
			if client != nil {
				client.CloseIdleConnections()
			}
			if retry {
				d.deadRetries.Add(1)
				if failedWrite && !errors.Is(err, ErrUnsent) {
					d.writeRetries.Add(1)
				}
			}
		}
		return false, retry
	}
}

func idempotent(req *fasthttp.Request) bool {
	h := &req.Header
	return h.IsGet() || h.IsHead() || h.IsPut() || h.IsOptions() || h.IsDelete() || h.IsTrace() || string(h.Method()) == "QUERY"
}
