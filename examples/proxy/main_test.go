package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/testkit"
)

// The proxy's whole path: a client on the host, the proxy (server package)
// on the host, the upstream inside a namespace the demo creates, reached
// through the client package's pool in that namespace.
func TestProxyEndToEnd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the demo namespace needs root (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip command; .ci/run installs it")
	}
	const upstream = "127.0.0.1:9000"
	ns, stop, err := startDemoUpstream(upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	// Nothing answers on that address in this namespace: success below is
	// the namespace's doing.
	if c, err := net.DialTimeout("tcp", upstream, time.Second); err == nil {
		c.Close()
		t.Skipf("something listens on %s in the host namespace", upstream)
	}

	addr, cancel, done := startProxy(t, Config{Addr: "127.0.0.1:0", Upstream: upstream, Namespace: ns, Limit: 64})
	hc := &fasthttp.HostClient{Addr: addr}
	defer hc.CloseIdleConnections()
	for i := range 20 {
		status, body, err := hc.GetTimeout(nil, "http://proxy/path/"+string(rune('a'+i)), 5*time.Second)
		if err != nil || status != 200 || !strings.Contains(string(body), "upstream in namespace "+ns) ||
			!strings.Contains(string(body), "GET /path/"+string(rune('a'+i))) {
			t.Fatalf("request %d through the proxy: %d %q %v", i, status, body, err)
		}
	}
	_, body, err := hc.GetTimeout(nil, "http://proxy/metrics", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`connopt_http_requests_total{code="200",method="GET"} 20`,
		"connopt_listener_accepted_connections_total 1",
		`connopt_sockpool_sockets_handed_out_total{namespace="` + ns + `"}`,
		"connopt_client_dials_total",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// The upstream goes away: the proxy answers 502, and keeps serving.
	stop()
	status, _, err := hc.GetTimeout(nil, "http://proxy/", 5*time.Second)
	if err != nil || status != fasthttp.StatusBadGateway {
		t.Fatalf("with the upstream gone: %d %v, want 502", status, err)
	}

	cancel()
	testkit.Returns(t, done, 15*time.Second, "graceful stop")
}

// startProxy runs the proxy until cancel; done delivers run's result.
func startProxy(t *testing.T, cfg Config) (addr string, cancel func(), done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, cfg, func(a net.Addr) { addrc <- a }) }()
	select {
	case a := <-addrc:
		return a.String(), cancel, errc
	case err := <-errc:
		cancel()
		t.Fatalf("run: %v", err)
		return "", nil, nil
	}
}
