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
	hc.RetryIfErr = d.RetryIfErr(nil) // the Transport closes the idle connections
	return hc
}

// Client returns a fasthttp.Client that dials with d, moves requests off
// connections the upstream closed, retries as RetryIfErr says and closes
// connections idle for DefaultMaxIdleConnDuration. A connection found dead
// drops the idle connections of its own host only.
func (d *Dialer) Client() *fasthttp.Client {
	c := &fasthttp.Client{DialTimeout: d.DialTimeout, Transport: d.Transport(),
		MaxIdleConnDuration: DefaultMaxIdleConnDuration}
	c.RetryIfErr = d.RetryIfErr(nil)
	return c
}

// maxRedirects bounds how many connections one request may find closed by
// the upstream before it is sent; after burstRedirects in a row the
// host's idle connections are closed (they died together, after an idle
// gap or an upstream restart) so the next one is dialed afresh.
const (
	maxRedirects   = 16
	burstRedirects = 3
)

// Transport returns the fasthttp.RoundTripper of the clients built here:
// fasthttp's own, except that
//
//   - a request whose connection turns out closed by the upstream before
//     anything was written (ErrUnsent: the dialer saw its FIN or RST) is
//     written again on another connection at once, whatever its method,
//     without using one of fasthttp's attempts. A request with a body
//     stream (SetBodyStream, SetBodyStreamWriter) is not: fasthttp's
//     Request.Write reads and closes the stream on the first attempt, so
//     it fails with that error, as it does on stock fasthttp;
//   - a pooled connection found dead (EOF, reset, EPIPE) closes the idle
//     connections of the HostClient it came from, the one upstream (in a
//     fasthttp.Client, one host's), so a retry dials afresh instead of
//     taking another connection that died with it.
func (d *Dialer) Transport() fasthttp.RoundTripper { return redirectTransport{d} }

type redirectTransport struct{ d *Dialer }

func (t redirectTransport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	// Decided before the first attempt: by the time it fails, Write has
	// consumed the stream and IsBodyStream is false.
	stream := req.IsBodyStream()
	for i := 1; ; i++ {
		retry, err := fasthttp.DefaultTransport.RoundTrip(hc, req, resp)
		if err == nil {
			return retry, nil
		}
		if stream || i > maxRedirects || !errors.Is(err, ErrUnsent) {
			if deadConn(err) {
				hc.CloseIdleConnections()
			}
			return retry, err
		}
		t.d.redirected.Add(1)
		if i == burstRedirects {
			hc.CloseIdleConnections()
		}
	}
}

// deadConn reports whether err says the connection a request used had
// been closed by the upstream.
func deadConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, fasthttp.ErrConnectionClosed) || tcpconn.IsPeerClosed(err)
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

// RetryIfErr returns the fasthttp.RetryIfErrFunc of the clients built here.
// A pooled keep-alive connection is never probed before reuse; if the
// upstream closed it meanwhile, the request fails on write (EPIPE, reset)
// or on read (EOF, reset). A request is retried only when that is safe:
//
//   - always when nothing of it left (ErrUnsent: the peer watch refused the
//     write), whatever its method;
//   - for idempotent methods (GET, HEAD, PUT, QUERY, OPTIONS, DELETE,
//     TRACE, RFC 9110's), after any error, as fasthttp retries its own;
//   - never otherwise. A failed write is no proof that the upstream did not
//     process the request: an upstream that answers early without reading
//     a large body (a 413, a 401) and closes makes the rest of the write
//     fail with a reset after it acted on the request.
//
// client, if not nil, has its idle connections closed when a connection
// turns out dead (set on a HostClient with another Transport). The clients
// built here pass nil: their Transport closes the idle connections of the
// one host whose connection died. Do not pass a fasthttp.Client, whose
// CloseIdleConnections empties every host's pool. Each retry after a dead
// connection counts in connopt_client_dead_connection_retries_total.
func (d *Dialer) RetryIfErr(client IdleCloser) fasthttp.RetryIfErrFunc {
	return func(req *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
		dead := deadConn(err)
		unsent := errors.Is(err, ErrUnsent)
		retry = unsent || idempotent(req)
		if dead {
			if client != nil {
				client.CloseIdleConnections()
			}
			if retry {
				d.deadRetries.Add(1)
				var oe *net.OpError
				if !unsent && errors.As(err, &oe) && oe.Op == "write" {
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
