package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/middleware"
)

// dashboards is where the dashboard and the rules live, from this package.
const dashboards = "../../dashboards"

// promQuery runs an instant query and returns its samples' values.
func promQuery(t *testing.T, prom, q string) ([]float64, error) {
	t.Helper()
	resp, err := http.Get(prom + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", q, r.Error)
	}
	var vs []float64
	for _, s := range r.Data.Result {
		v, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return vs, nil
}

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
	for _, cmd := range []string{"ip", "prometheus", "promtool"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Skipf("needs %s (Debian's iproute2 and prometheus packages; .ci/run installs them)", cmd)
		}
	}
	if out, err := exec.Command("promtool", "check", "rules", filepath.Join(dashboards, "rules.yml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}

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
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	promAddr := free.Addr().String()
	free.Close()
	dir := t.TempDir()
	rules, err := filepath.Abs(filepath.Join(dashboards, "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - %s\nscrape_configs:\n  - job_name: connopt-proxy\n    static_configs:\n      - targets: ['%s']\n", rules, addr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var promLog bytes.Buffer
	prom := exec.Command("prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr, "--log.level=warn")
	prom.Stdout, prom.Stderr = &promLog, &promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		prom.Process.Kill()
		prom.Wait()
		if t.Failed() {
			t.Logf("prometheus:\n%s", promLog.String())
		}
	}()
	base := "http://" + promAddr
	deadline := time.Now().Add(60 * time.Second)
	for {
		vs, err := promQuery(t, base, `count_over_time(up{job="connopt-proxy"}[5m]) >= 3 and on() min_over_time(up{job="connopt-proxy"}[5m]) == 1`)
		if err == nil && len(vs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus did not scrape the proxy 3 times in a row (last: %v %v)", vs, err)
		}
		time.Sleep(250 * time.Millisecond)
	}

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
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = bytes.NewReader(exposition)
	if out, err := check.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	exprs := dashboardExprs(t)
	n := 0
	for title, es := range exprs {
		for _, e := range es {
			n++
			vs, err := promQuery(t, base, e)
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
	if vs, _ := promQuery(t, base, exprs["5xx ratio"][0]); len(vs) != 1 || vs[0] <= 0 {
		t.Errorf("the 5xx panel does not show the panics: %v", vs)
	}

	// Every rule loaded and healthy; every recorded series present; the
	// quantity each alert compares returns data.
	var rr struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Query     string `json:"query"`
					Type      string `json:"type"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	resp, err = http.Get(base + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&rr)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	threshold := regexp.MustCompile(`(?s)^(.*\S)\s*(>|<|>=|<=|==|!=)\s*[0-9.]+\s*$`)
	rulesSeen := 0
	for _, g := range rr.Data.Groups {
		for _, r := range g.Rules {
			rulesSeen++
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
			if vs, err := promQuery(t, base, q); err != nil || len(vs) == 0 {
				t.Errorf("rule %s: no data for %s (%v)", r.Name, q, err)
			}
		}
	}
	if rulesSeen != 7 {
		t.Errorf("Prometheus loaded %d rules, want the 7 of rules.yml", rulesSeen)
	}
	if vs, _ := promQuery(t, base, "connopt:http_5xx:ratio_rate5m"); len(vs) != 1 || vs[0] <= 0 {
		t.Errorf("the recorded 5xx ratio does not show the panics: %v", vs)
	}
}
