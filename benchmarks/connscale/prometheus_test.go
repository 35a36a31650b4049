package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"testing"

	"github.com/connopt/connopt/internal/testkit"
	"github.com/prometheus/client_golang/prometheus"
)

// startWorker starts this test binary as a connscale worker and returns its
// first report (server: its address; both: their metrics address). The
// worker stops when its stdin closes, at the end of the test.
func startWorker(t *testing.T, args ...string) report {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	dec := json.NewDecoder(bufio.NewReader(stdout))
	for {
		var r report
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("%v: no report: %v", args, err)
		}
		if r.Metrics != "" {
			go func() { // keep reading, so the worker never blocks on its output
				for dec.Decode(&r) == nil {
				}
			}()
			return r
		}
	}
}

// The multi-host configuration: prometheus.yml passes promtool (with the
// rules it loads), and a real Prometheus scraping a server and a client
// worker computes the summary's figures with rules.yml: every rule returns
// data, and the counts are the run's.
func TestPrometheusReproducesTheSummary(t *testing.T) {
	testkit.NeedPrometheus(t)
	testkit.Promtool(t, nil, "check", "config", "prometheus.yml")

	srv := startWorker(t, "server", "-addr", "127.0.0.1:0", "-kernel-metrics")
	const conns = 300
	cli := startWorker(t, "client", "-server", srv.Addr, "-conns", "300", "-rate", "3000",
		"-interval", "200ms", "-timeout", "1s", "-hold", "1m")
	base := testkit.StartPrometheus(t, map[string][]string{
		"connscale-server": {srv.Metrics},
		"connscale-client": {cli.Metrics},
	}, []string{"rules.yml"}, 5)

	rules := testkit.PromRules(t, base)
	if len(rules) != 17 {
		t.Fatalf("%d rules loaded, want the 17 of rules.yml", len(rules))
	}
	for _, r := range rules {
		if r.Health != "ok" {
			t.Errorf("rule %s: %s %s", r.Name, r.Health, r.LastError)
		}
		vs, err := testkit.PromQuery(base, r.Name)
		if err != nil || (len(vs) == 0 && r.Name != "connscale:failed_by_reason") {
			t.Errorf("rule %s: no data (%v)", r.Name, err)
		}
		for _, v := range vs {
			if v != v {
				t.Errorf("rule %s: NaN", r.Name)
			}
		}
	}
	for q, want := range map[string]float64{
		"connscale:established": conns, "connscale:open_connections": conns,
		"connscale:server_open_connections": conns, "connscale:failed": 0,
	} {
		if vs, _ := testkit.PromQuery(base, q); len(vs) != 1 || vs[0] != want {
			t.Errorf("%s = %v, want %v", q, vs, want)
		}
	}
	// Answered and timed-out pings against pings, from one scrape (a scrape
	// is committed whole); the recording rules may each see a different
	// scrape when one lands during their group's evaluation.
	if vs, _ := testkit.PromQuery(base, "connscale:pongs > 0"); len(vs) != 1 {
		t.Error("connscale:pongs: no pongs")
	}
	if vs, _ := testkit.PromQuery(base, "connscale_client_pongs_total > 0 and connscale_client_pongs_total + connscale_client_timeouts_total <= connscale_client_pings_total"); len(vs) != 1 {
		t.Error("pongs not between 0 and the pings sent")
	}
}

// A scrape never shows more answers than pings, however busy the client:
// pings and pongs are counted as a client does (the ping first) while the
// registry is gathered.
func TestScrapeNeverShowsMorePongsThanPings(t *testing.T) {
	s := &clientStats{}
	reg := prometheus.NewRegistry()
	reg.MustRegister(pingCounters{s})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s.pings.Add(1)
			if i%5 == 0 {
				s.timeouts.Add(1)
			} else {
				s.pongs.Add(1)
			}
		}
	}()
	defer func() { close(stop); <-done }()
	for range 2000 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		v := map[string]float64{}
		for _, mf := range mfs {
			v[mf.GetName()] = mf.GetMetric()[0].GetCounter().GetValue()
		}
		if v["connscale_client_pongs_total"]+v["connscale_client_timeouts_total"] > v["connscale_client_pings_total"] {
			t.Fatalf("a scrape shows %v", v)
		}
	}
}
