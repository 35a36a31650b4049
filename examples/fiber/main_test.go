package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/httpload"
	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/listener"
)

func TestMain(m *testing.M) {
	if testkit.HelperMode() == "fiber-prefork" {
		os.Args = []string{os.Args[0], "-addr", "127.0.0.1:0", "-prefork", "2"}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The app on connopt's listener answers as on net.Listen (the control), and
// /metrics counts what Fiber sent: 200, the 404 of no route, the 500 of a
// panic.
func TestAppOnConnoptListener(t *testing.T) {
	stock, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	connopt, err := listener.Listen("tcp", "127.0.0.1:0", listener.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var metrics string
	for _, ln := range []net.Listener{stock, connopt} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- serve(ctx, ln) }()
		base := "http://" + ln.Addr().String()
		for path, want := range map[string]int{"/": 200, "/missing": 404, "/panic": 500} {
			code, body := testkit.Get(t, base+path)
			if code != want {
				t.Errorf("%T %s: %d %q, want %d", ln, path, code, body, want)
			}
			if path == "/" && body != "Hello, World!" {
				t.Errorf("%T: body %q", ln, body)
			}
		}
		_, metrics = testkit.Get(t, base+"/metrics")
		cancel()
		testkit.Returns(t, done, 10*time.Second, fmt.Sprintf("serve on %T", ln))
	}
	for _, want := range []string{
		`connopt_http_requests_total{code="200",method="GET"} 1`,
		`connopt_http_requests_total{code="404",method="GET"} 1`,
		`connopt_http_requests_total{code="500",method="GET"} 1`,
		`connopt_listener_accepted_connections_total `,
		`connopt_http_request_duration_seconds_bucket{method="GET",le="1e-06"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics on connopt's listener lacks %q", want)
		}
	}
	if strings.Contains(metrics, `method="POST"`) {
		t.Error("series for a method no request used")
	}
}

// -prefork 2: two children on connopt's sockets; a killed child comes back,
// SIGHUP hands over to a new generation, SIGTERM stops everything.
func TestPrefork(t *testing.T) {
	h := testkit.StartHelper(t, "fiber-prefork", nil, nil)
	m, next := h.Wait(t, 0, regexp.MustCompile(`prefork: generation 1 ready on (\S+): pids \[(\d+) (\d+)\]`), 60*time.Second)
	base := "http://" + m[1]
	if code, body := testkit.Get(t, base+"/"); code != 200 || body != "Hello, World!" {
		t.Fatalf("%d %q", code, body)
	}
	pid, _ := strconv.Atoi(m[2])
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, next = h.Wait(t, next, regexp.MustCompile(`prefork: slot 0 restarted: pid \d+`), 10*time.Second)
	if err := h.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	_, next = h.Wait(t, next, regexp.MustCompile(`prefork: generation 1 stopped`), 60*time.Second)
	for range 20 {
		if code, _ := testkit.Get(t, base+"/"); code != 200 {
			t.Fatalf("after the hand-over: %d", code)
		}
	}
	if err := h.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	h.Wait(t, next, regexp.MustCompile(`prefork: stopped`), 30*time.Second)
	if code := h.Exited(t, 10*time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// Ten hand-overs under a load of new-connection and keep-alive GETs with
// no retries: with the drain (prefork.ServeFasthttpWith), not one fails.
func TestPreforkHandoverLosesNothing(t *testing.T) {
	h := testkit.StartHelper(t, "fiber-prefork", nil, nil)
	m, next := h.Wait(t, 0, regexp.MustCompile(`prefork: generation 1 ready on (\S+): pids`), 60*time.Second)
	load := httpload.Start(m[1], fasthttp.Dial, 3, "Hello, World!")
	const handovers = 10
	for gen := 2; gen <= handovers+1; gen++ {
		before := load.OK.Load()
		if err := h.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		_, next = h.Wait(t, next, regexp.MustCompile(fmt.Sprintf(`prefork: generation %d stopped`, gen-1)), 60*time.Second)
		testkit.Eventually(t, "requests answered after the hand-over", func() bool { return load.OK.Load() > before+50 })
	}
	load.Stop()
	t.Logf("%d hand-overs: %d requests answered, %d failed (%d new-connection, %d keep-alive)",
		handovers, load.OK.Load(), load.Failed(), load.FailedNew.Load(), load.FailedKeepAlive.Load())
	if load.Failed() != 0 {
		t.Errorf("%d requests failed: %v", load.Failed(), load.Errors())
	}
}
