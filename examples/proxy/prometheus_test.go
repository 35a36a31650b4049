package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/internal/testkit"
	"github.com/connopt/connopt/middleware"
)

// dashboards is where the dashboard and the rules live, from this package.
const dashboards = "../../dashboards"

// dashboardExprs are the dashboard's PromQL expressions by panel title,
// with Grafana's $__rate_interval replaced by a window that covers the
// whole test.
func dashboardExprs(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dashboards, "connopt.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("connopt.json: %v", err)
	}
	exprs := map[string][]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs[p.Title] = append(exprs[p.Title], strings.ReplaceAll(tg.Expr, "$__rate_interval", "5m"))
		}
	}
	return exprs
}

// Real Prometheus scrapes the proxy example under a little load (with
// handler panics among the requests); every expression of the dashboard
// and every rule must return data, the 5xx ones must show the panics, and
// promtool must accept the rules and the exposition.
func TestPrometheusDashboardAndRules(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the demo namespace needs root (CI runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip command; .ci/run installs it")
	}
	testkit.NeedPrometheus(t)
	testkit.Promtool(t, nil, "check", "rules", filepath.Join(dashboards, "rules.yml"))

	const upstream = "127.0.0.1:9002"
	ns, stopUpstream, err := startDemoUpstream(upstream)
	if err != nil {
		t.Fatal(err)
	}
	defer stopUpstream()
	panicky := func(next fasthttp.RequestHandler) fasthttp.RequestHandler {
		return func(ctx *fasthttp.RequestCtx) {
			if string(ctx.Path()) == "/panic" {
				panic("a bug behind the middleware")
			}
			next(ctx)
		}
	}
	addr, cancel, done := startProxy(t, Config{Addr: "127.0.0.1:0", Upstream: upstream, Namespace: ns, Limit: 64, Inner: middleware.Middleware(panicky)})
	defer func() {
		cancel()
		<-done
	}()

	// Prometheus itself, scraping every second, rules evaluated every
	// second.
	base := testkit.StartPrometheus(t, map[string][]string{"connopt-proxy": {addr}}, []string{filepath.Join(dashboards, "rules.yml")}, 3)

	// Then a little load, bounded by the test, so that what it does
	// (the proxy's first upstream dials among it) happens between scrapes: keep-alive GETs, a new
	// connection now and then, one request in twenty panics.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	wg.Go(func() {
		hc := &fasthttp.HostClient{Addr: addr}
		defer hc.CloseIdleConnections()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			path := "/x"
			if i%20 == 0 {
				path = "/panic"
			}
			hc.Get(nil, "http://"+addr+path)
			if i%10 == 0 {
				hc.CloseIdleConnections()
			}
		}
	})

	time.Sleep(8 * time.Second) // eight scrapes and rule evaluations under load

	// promtool check metrics reads an exposition on stdin and prints any
	// lint problem.
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	exposition, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	series := 0
	for _, line := range strings.Split(string(exposition), "\n") {
		if strings.HasPrefix(line, "connopt_") {
			series++
		}
	}
	t.Logf("the proxy exposes %d connopt_* series (GET traffic only)", series)
	if out := testkit.Promtool(t, exposition, "check", "metrics"); strings.TrimSpace(out) != "" {
		t.Errorf("promtool check metrics:\n%s", out)
	}

	exprs := dashboardExprs(t)
	n := 0
	for title, es := range exprs {
		for _, e := range es {
			n++
			vs, err := testkit.PromQuery(base, e)
			switch {
			case err != nil:
				t.Errorf("panel %q: %v", title, err)
			case len(vs) == 0:
				t.Errorf("panel %q: no data for %s", title, e)
			default:
				for _, v := range vs {
					if v != v { // NaN: a quantile of nothing
						t.Errorf("panel %q: NaN for %s", title, e)
					}
				}
			}
		}
	}
	if n < 20 {
		t.Fatalf("only %d dashboard expressions found", n)
	}
	if vs, _ := testkit.PromQuery(base, exprs["5xx ratio"][0]); len(vs) != 1 || vs[0] <= 0 {
		t.Errorf("the 5xx panel does not show the panics: %v", vs)
	}

	// Every rule loaded and healthy; every recorded series present; the
	// quantity each alert compares returns data.
	threshold := regexp.MustCompile(`(?s)^(.*\S)\s*(>|<|>=|<=|==|!=)\s*[0-9.]+\s*$`)
	rules := testkit.PromRules(t, base)
	for _, r := range rules {
		if r.Health != "ok" {
			t.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError)
		}
		q := r.Name // a recording rule: its series
		if r.Type == "alerting" {
			m := threshold.FindStringSubmatch(r.Query)
			if m == nil {
				t.Errorf("alert %s: no threshold comparison in %q", r.Name, r.Query)
				continue
			}
			q = m[1]
		}
		if vs, err := testkit.PromQuery(base, q); err != nil || len(vs) == 0 {
			t.Errorf("rule %s: no data for %s (%v)", r.Name, q, err)
		}
	}
	if len(rules) != 7 {
		t.Errorf("Prometheus loaded %d rules, want the 7 of rules.yml", len(rules))
	}
	if vs, _ := testkit.PromQuery(base, "connopt:http_5xx:ratio_rate5m"); len(vs) != 1 || vs[0] <= 0 {
		t.Errorf("the recorded 5xx ratio does not show the panics: %v", vs)
	}
}
