package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A smoke run of the harness itself, so that it cannot rot: two servers,
// all three loads, one short round, charts written. It needs wrk (and perf
// for the syscall columns, root for perf), which .ci/run installs.
func TestSmoke(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("wrk is not installed (apt-get install -y wrk; .ci/run does)")
	}
	_, perfErr := exec.LookPath("perf")
	usePerf := perfErr == nil && os.Geteuid() == 0
	out := t.TempDir()
	table, err := Run(Options{
		Servers:  []string{"fasthttp", "connopt-server"},
		Loads:    []string{"keep-alive", "churn", "pipelined"},
		Duration: time.Second, // wrk's shortest
		Rounds:   1,
		Conns:    4,
		NoWarmup: true,
		Perf:     usePerf,
		Out:      out,
		Log:      t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"**keep-alive**", "**churn**", "**pipelined**", "| fasthttp |", "| connopt-server |"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	for _, f := range []string{"latest.md", "cpu.svg", "syscalls.svg"} {
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil || len(b) == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}
