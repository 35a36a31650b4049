package testkit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NeedPrometheus skips the test, with the reason, unless Debian's
// prometheus package (prometheus and promtool) is installed; .ci/run
// installs it.
func NeedPrometheus(t testing.TB) {
	t.Helper()
	for _, cmd := range []string{"prometheus", "promtool"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Skipf("needs %s (Debian's prometheus package; .ci/run installs it)", cmd)
		}
	}
}

// Promtool runs promtool with args (and stdin, if not nil) and fails the
// test unless it succeeds; it returns what promtool printed.
func Promtool(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command("promtool", args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// StartPrometheus runs a Prometheus that scrapes every second and
// evaluates ruleFiles every second, one job per entry of jobs (name to
// targets), and returns its base URL once it has scraped every target
// scrapes times. It is killed when the test ends.
func StartPrometheus(t testing.TB, jobs map[string][]string, ruleFiles []string, scrapes int) string {
	t.Helper()
	var conf strings.Builder
	conf.WriteString("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n")
	for _, f := range ruleFiles {
		abs, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, "  - %s\n", abs)
	}
	conf.WriteString("scrape_configs:\n")
	targets := 0
	for job, ts := range jobs {
		fmt.Fprintf(&conf, "  - job_name: %s\n    static_configs:\n      - targets: ['%s']\n", job, strings.Join(ts, "', '"))
		targets += len(ts)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	free.Close()
	var log bytes.Buffer
	cmd := exec.Command("prometheus", "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus:\n%s", log.String())
		}
	})
	base := "http://" + addr
	q := fmt.Sprintf(`count(count_over_time(up[5m]) >= %d and on() min_over_time(up[5m]) == 1) == %d`, scrapes, targets)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if vs, err := PromQuery(base, q); err == nil && len(vs) == 1 {
			return base
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus did not scrape its %d targets %d times", targets, scrapes)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// PromQuery runs an instant query and returns its samples' values.
func PromQuery(base, q string) ([]float64, error) {
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
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

// PromRule is a rule as Prometheus's /api/v1/rules reports it.
type PromRule struct {
	Name      string `json:"name"`
	Query     string `json:"query"`
	Type      string `json:"type"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// PromRules lists the rules Prometheus has loaded.
func PromRules(t testing.TB, base string) []PromRule {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rr struct {
		Data struct {
			Groups []struct {
				Rules []PromRule `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rr); err != nil {
		t.Fatal(err)
	}
	var rules []PromRule
	for _, g := range rr.Data.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}
