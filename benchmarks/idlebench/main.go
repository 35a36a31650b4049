// Command idlebench measures what happens to requests sent on pooled
// keep-alive connections that the upstream closes while they are idle, for
// three clients side by side in one run, alternated: stock
// fasthttp.HostClient, connopt's client without the peer watch (what it
// was before the watch), and connopt's client with it.
//
// Two upstreams:
//
//   - fasthttp with IdleTimeout 50 ms and MaxRequestsPerConn 7, 16 workers
//     firing together then pausing 0-80 ms, 3,000 GETs and 300 POSTs with
//     unique ids per client and round; the upstream counts each id, so a
//     POST processed twice, or processed although the client saw it fail,
//     is seen;
//   - nginx (Debian's nginx-light, started here on 127.0.0.1 with
//     keepalive_timeout 1 s and keepalive_requests 100), 100,000 requests
//     per client (10% POSTs) in bursts of 2,000 separated by idle pauses of
//     0.9-1.4 s, around the keep-alive timeout; ids are read back from
//     nginx's access log.
//
// A failed POST whose bytes had already left when the upstream's FIN
// arrived is the race no client can close without a probe: it is reported
// as such (the upstream never processed it, so it is safe to send again
// only with an idempotency key of the application's).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/connopt/connopt/benchmarks/internal/measure"
	"github.com/connopt/connopt/client"
)

// The clients compared. "below upstream" sets fasthttp's
// MaxIdleConnDuration to half the upstream's keep-alive timeout, the
// advice for stock clients; connopt's clients keep client's defaults
// (DefaultMaxIdleConnDuration).
var clients = []string{"fasthttp.HostClient", "fasthttp.HostClient, idle below upstream", "connopt (no watch)", "connopt"}

// tally is what one client did in one run.
type tally struct {
	gets, posts              int
	failedGets, failedPosts  int
	postsTwice               int // processed more than once by the upstream
	failedButProcessed       int // the client saw an error, the upstream processed it
	failedPostsSent          int // failed POSTs whose write had gone through (failed at read)
	redirected, writeRetries uint64
	goneIdle, deadRetries    uint64
	elapsed                  time.Duration
}

func (t *tally) add(o tally) {
	t.gets += o.gets
	t.posts += o.posts
	t.failedGets += o.failedGets
	t.failedPosts += o.failedPosts
	t.postsTwice += o.postsTwice
	t.failedButProcessed += o.failedButProcessed
	t.failedPostsSent += o.failedPostsSent
	t.redirected += o.redirected
	t.writeRetries += o.writeRetries
	t.goneIdle += o.goneIdle
	t.deadRetries += o.deadRetries
	t.elapsed += o.elapsed
}

// newClient returns the HostClient for kind, and its dialer (nil for stock).
func newClient(kind, addr string, upstreamIdle time.Duration) (*fasthttp.HostClient, *client.Dialer) {
	switch kind {
	case "fasthttp.HostClient":
		return &fasthttp.HostClient{Addr: addr}, nil
	case "fasthttp.HostClient, idle below upstream":
		return &fasthttp.HostClient{Addr: addr, MaxIdleConnDuration: upstreamIdle / 2}, nil
	}
	d, err := client.NewDialer(client.Config{DisablePeerWatch: kind == "connopt (no watch)"})
	if err != nil {
		log.Fatal(err)
	}
	return d.HostClient(addr), d
}

// load runs total requests (every postEvery-th a POST with a unique id) on
// hc from workers goroutines firing together in bursts of burst requests,
// pausing pause() between bursts; processed says how many times the
// upstream processed an id (after the run).
func load(hc *fasthttp.HostClient, d *client.Dialer, prefix string, total, postEvery, workers, burst int, pause func() time.Duration, processed func(id string) int) tally {
	var t tally
	type outcome struct {
		id   string
		post bool
		err  error
	}
	var mu sync.Mutex
	var outcomes []outcome
	var next atomic.Int64
	start := time.Now()
	for sent := 0; sent < total; sent += burst {
		n := min(burst, total-sent)
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				for {
					i := next.Add(1) - 1
					if i >= int64(sent+n) {
						return
					}
					id := fmt.Sprintf("%s-%d", prefix, i)
					post := i%int64(postEvery) == int64(postEvery-1)
					req.Reset()
					req.SetRequestURI("http://" + hc.Addr + "/r?id=" + id)
					if post {
						req.Header.SetMethod("POST")
						req.SetBodyString("id=" + id)
					}
					err := hc.DoTimeout(req, resp, 5*time.Second)
					if err == nil && resp.StatusCode() != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode())
					}
					mu.Lock()
					outcomes = append(outcomes, outcome{id, post, err})
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		next.Store(int64(sent + n))
		time.Sleep(pause())
	}
	t.elapsed = time.Since(start)
	hc.CloseIdleConnections()
	time.Sleep(100 * time.Millisecond) // the upstream logs what it got
	for _, o := range outcomes {
		p := processed(o.id)
		if o.post {
			t.posts++
			if p > 1 {
				t.postsTwice++
			}
		} else {
			t.gets++
		}
		if o.err != nil {
			if o.post {
				t.failedPosts++
				var oe *net.OpError
				if !(errors.As(o.err, &oe) && oe.Op == "write") {
					t.failedPostsSent++
				}
			} else {
				t.failedGets++
			}
			if p > 0 {
				t.failedButProcessed++
			}
		}
	}
	if d != nil {
		s := d.Stats()
		t.redirected, t.writeRetries, t.goneIdle, t.deadRetries = s.Redirected, s.WriteRetries, s.GoneIdle, s.DeadRetries
	}
	return t
}

// --- the fasthttp upstream ---

func fasthttpPhase(rounds int) map[string]*tally {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	srv := &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			id := string(ctx.QueryArgs().Peek("id"))
			mu.Lock()
			seen[id]++
			mu.Unlock()
			ctx.WriteString("ok")
		},
		IdleTimeout:        50 * time.Millisecond,
		MaxRequestsPerConn: 7,
	}
	go srv.Serve(ln)
	defer srv.Shutdown()
	processed := func(id string) int { mu.Lock(); defer mu.Unlock(); return seen[id] }
	pause := func() time.Duration { return time.Duration(rand.IntN(81)) * time.Millisecond }
	return alternate("fasthttp upstream", "f", ln.Addr().String(), 50*time.Millisecond, rounds, func(hc *fasthttp.HostClient, d *client.Dialer, prefix string) tally {
		return load(hc, d, prefix, 3300, 11, 16, 16, pause, processed)
	})
}

// alternate runs each client in turn, rounds times, against addr, and
// totals what run measured.
func alternate(upstream, tag, addr string, upstreamIdle time.Duration, rounds int, run func(hc *fasthttp.HostClient, d *client.Dialer, prefix string) tally) map[string]*tally {
	res := map[string]*tally{}
	for r := range rounds {
		for _, c := range clients {
			hc, d := newClient(c, addr, upstreamIdle)
			t := run(hc, d, fmt.Sprintf("%s%d-%s", tag, r, strings.ReplaceAll(c, " ", "_")))
			if d != nil {
				d.Close()
			}
			if res[c] == nil {
				res[c] = &tally{}
			}
			res[c].add(t)
			fmt.Fprintf(os.Stderr, "%s, round %d, %-20s failed GETs %d, failed POSTs %d, POSTs twice %d, %v\n",
				upstream, r+1, c, t.failedGets, t.failedPosts, t.postsTwice, t.elapsed.Round(time.Millisecond))
		}
	}
	return res
}

// --- the nginx upstream ---

const nginxConf = `worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
	log_format ids '$arg_id';
	access_log %[1]s/access.log ids;
	client_body_temp_path %[1]s/body;
	keepalive_timeout %[3]s;
	keepalive_requests 100;
	server {
		listen 127.0.0.1:%[2]d;
		location / { return 200 "ok"; }
	}
}
`

func nginxPhase(keepalive time.Duration, rounds, total int) map[string]*tally {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		log.Fatal("idlebench needs nginx: apt-get install -y nginx-light (make bench-idle installs it)")
	}
	dir, err := os.MkdirTemp("", "connopt-idlebench-nginx-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	probe, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, port, fmt.Sprintf("%dms", keepalive.Milliseconds())), 0o644); err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", conf, "-g", "daemon off;")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp4", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log.Fatal("nginx did not start listening")
		}
	}
	logPath := filepath.Join(dir, "access.log")
	processed := func() func(string) int {
		// Read the whole log once per run: ids are unique per run.
		var once sync.Once
		var seen map[string]int
		return func(id string) int {
			once.Do(func() {
				seen = map[string]int{}
				f, err := os.Open(logPath)
				if err != nil {
					log.Fatal(err)
				}
				defer f.Close()
				sc := bufio.NewScanner(f)
				for sc.Scan() {
					seen[sc.Text()]++
				}
			})
			return seen[id]
		}
	}
	// Pauses around keepalive_timeout (nginx's timer fires a little after
	// it): some connections are reused just before nginx closes them, some
	// just after.
	pause := func() time.Duration { return keepalive*9/10 + time.Duration(rand.Int64N(int64(keepalive/2)+1)) }
	return alternate("nginx upstream", "n", addr, keepalive, rounds, func(hc *fasthttp.HostClient, d *client.Dialer, prefix string) tally {
		return load(hc, d, prefix, total, 10, 16, 2000, pause, processed())
	})
}

func render(title string, res map[string]*tally) string {
	var b strings.Builder
	fmt.Fprintf(&b, "**%s**\n\n", title)
	b.WriteString("| client | GETs | failed GETs | POSTs | failed POSTs | of which sent (failed at read) | failed, yet processed | POSTs processed twice | redirected before writing | retried after a failed write | closed while idle (seen) |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range clients {
		t := res[c]
		watch := func(v uint64) string {
			if strings.HasPrefix(c, "fasthttp.HostClient") {
				return "—"
			}
			return strconv.FormatUint(v, 10)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %d | %s | %s | %s |\n", c, t.gets, t.failedGets, t.posts, t.failedPosts,
			t.failedPostsSent, t.failedButProcessed, t.postsTwice, watch(t.redirected), watch(t.writeRetries), watch(t.goneIdle))
	}
	b.WriteString("\n")
	return b.String()
}

func main() {
	rounds := flag.Int("rounds", 3, "alternated rounds against the fasthttp upstream")
	nginxRounds := flag.Int("nginx-rounds", 1, "alternated rounds against nginx")
	nginxTotal := flag.Int("nginx-requests", 100000, "requests per client and round against nginx")
	skipNginx := flag.Bool("no-nginx", false, "skip the nginx upstream")
	skipFasthttp := flag.Bool("no-fasthttp", false, "skip the fasthttp upstream")
	keepalives := flag.String("nginx-keepalive", "1s", "nginx keepalive_timeout values, comma-separated (one table each)")
	out := flag.String("out", "", "also write the tables to this file")
	flag.Parse()
	var b strings.Builder
	var phases []string
	if !*skipFasthttp {
		phases = append(phases, fmt.Sprintf("%d rounds against fasthttp", *rounds))
	}
	if !*skipNginx {
		phases = append(phases, fmt.Sprintf("%d against nginx", *nginxRounds))
	}
	fmt.Fprintf(&b, "%s; the clients alternated in each round (%s), totals over the rounds; `./bin/idlebench %s`.\n\n",
		measure.Machine(), strings.Join(phases, ", "), strings.Join(os.Args[1:], " "))
	if !*skipFasthttp {
		b.WriteString(render("fasthttp upstream: IdleTimeout 50 ms, MaxRequestsPerConn 7; 16 workers firing together, pausing 0-80 ms; 3,000 GETs and 300 POSTs per client and round", fasthttpPhase(*rounds)))
	}
	if !*skipNginx {
		for _, v := range strings.Split(*keepalives, ",") {
			ka, err := time.ParseDuration(v)
			if err != nil || ka <= 0 {
				log.Fatalf("-nginx-keepalive %q: want durations like 2s,100ms", v)
			}
			b.WriteString(render(fmt.Sprintf("nginx upstream: keepalive_timeout %v, keepalive_requests 100; %d requests per client and round (10%% POSTs), bursts of 2,000 from 16 workers, pauses of 0.9-1.4 × the keep-alive timeout; \"idle below upstream\": MaxIdleConnDuration %v", ka, *nginxTotal, ka/2), nginxPhase(ka, *nginxRounds, *nginxTotal)))
		}
	}
	fmt.Print(b.String())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
