// Command handoverbench measures what clients see while a server hands
// over to a new process, the same load against three ways of doing it,
// alternated in one run:
//
//   - "fasthttp reuseport" (the stock control): the new process listens
//     with fasthttp's reuseport.Listen beside the old one, then the old one
//     gets SIGTERM and calls fasthttp's Shutdown. Connections queued on the
//     old socket when it closes are reset; idle keep-alive connections are
//     closed under their clients.
//   - "connopt server, own sockets": server.New (SO_REUSEPORT, a socket per
//     process) handing over the same way: its stop drains keep-alive
//     connections, but its queue still dies with its socket.
//   - "connopt prefork": server.New with Prefork, SIGHUP to the supervisor:
//     the sockets stay open in the supervisor across generations.
//
// Everything runs in a network namespace the harness makes (root), so that
// the namespace's RST counter counts both ends and nothing else. The load is
// three workers making GETs on new connections and three keep-alive
// fasthttp.HostClients, none retrying a failed request.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/reuseport"

	"github.com/connopt/connopt/benchmarks/internal/measure"
	"github.com/connopt/connopt/client"
	"github.com/connopt/connopt/internal/httpload"
	"github.com/connopt/connopt/internal/nsexec"
	"github.com/connopt/connopt/internal/procstat"
	"github.com/connopt/connopt/prefork"
	"github.com/connopt/connopt/server"
)

const addr = "127.0.0.1:8089" // inside the harness's namespace

var modes = []string{"fasthttp reuseport", "connopt server, own sockets", "connopt prefork"}

func hello(ctx *fasthttp.RequestCtx) { fmt.Fprintf(ctx, "pid %d", os.Getpid()) }

// serve is a server process's role.
func serve(role string) error {
	switch role {
	case "fasthttp":
		ln, err := reuseport.Listen("tcp4", addr)
		if err != nil {
			return err
		}
		s := &fasthttp.Server{Handler: hello}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		go func() { <-ctx.Done(); s.Shutdown() }()
		fmt.Println("ready")
		return s.Serve(ln)
	case "connopt":
		s, err := server.New(hello, server.Config{Addr: addr, Shards: 1, DisableMetrics: true})
		if err != nil {
			return err
		}
		fmt.Println("ready")
		return s.Run(context.Background())
	case "prefork":
		s, err := server.New(hello, server.Config{Addr: addr, DisableMetrics: true,
			Prefork: &prefork.Config{Children: 2}, Logger: log.New(os.Stdout, "", 0)})
		if err != nil {
			return err
		}
		return s.Run(context.Background())
	}
	return fmt.Errorf("unknown role %q", role)
}

// proc is a server process started in the namespace, its output read for
// lines.
type proc struct {
	cmd   *exec.Cmd
	lines chan string
}

func start(ns, role string) *proc {
	exe, err := os.Executable()
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "-role", role)
	out, err := cmd.StdoutPipe()
	if err != nil {
		log.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 64)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	return p
}

func (p *proc) wait(re *regexp.Regexp) {
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				log.Fatalf("server output ended before %q", re)
			}
			if re.MatchString(l) {
				return
			}
		case <-timeout:
			log.Fatalf("no %q within 60 s", re)
		}
	}
}

func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
}

type result struct {
	ok, failedNew, failedKeepAlive, resets int64
	rsts                                   int64
	elapsed                                time.Duration
	errs                                   []string
}

func rsts(ns string) int64 {
	var n int64
	if err := nsexec.Do(ns, func() (err error) { n, err = procstat.NetCounter("Tcp", "OutRsts"); return err }); err != nil {
		log.Fatal(err)
	}
	return n
}

// run hands over handovers times under load and returns what the clients
// saw.
func run(ns, mode string, handovers int) *result {
	var cur *proc
	var handover func()
	switch mode {
	case "connopt prefork":
		cur = start(ns, "prefork")
		cur.wait(regexp.MustCompile(`generation 1 ready`))
		gen := 1
		handover = func() {
			gen++
			cur.cmd.Process.Signal(syscall.SIGHUP)
			cur.wait(regexp.MustCompile(fmt.Sprintf(`generation %d stopped`, gen-1)))
		}
	default:
		role := map[string]string{"fasthttp reuseport": "fasthttp", "connopt server, own sockets": "connopt"}[mode]
		cur = start(ns, role)
		cur.wait(regexp.MustCompile(`^ready$`))
		handover = func() {
			next := start(ns, role)
			next.wait(regexp.MustCompile(`^ready$`))
			cur.stop()
			cur = next
		}
	}
	d, err := client.NewDialer(client.Config{Namespace: ns})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	before := rsts(ns)
	load := httpload.Start(addr, d.Dial, 3, "pid ")
	t0 := time.Now()
	for range handovers {
		n := load.OK.Load()
		handover()
		for load.OK.Load() < n+200 {
			time.Sleep(time.Millisecond)
		}
	}
	r := &result{elapsed: time.Since(t0)}
	load.Stop()
	r.ok, r.failedNew, r.failedKeepAlive, r.resets = load.OK.Load(), load.FailedNew.Load(), load.FailedKeepAlive.Load(), load.Resets.Load()
	r.errs = load.Errors()
	r.rsts = rsts(ns) - before
	cur.stop()
	return r
}

func main() {
	role := flag.String("role", "", "internal: run as a server process")
	handovers := flag.Int("handovers", 20, "hand-overs per mode and round")
	rounds := flag.Int("rounds", 2, "alternated rounds")
	out := flag.String("out", "", "also write the table to this file")
	flag.Parse()
	if *role != "" {
		if err := serve(*role); err != nil {
			log.Fatal(err)
		}
		return
	}
	if os.Geteuid() != 0 {
		log.Fatal("handoverbench needs root: it makes a network namespace")
	}
	ns := fmt.Sprintf("connopt-handoverbench-%d", os.Getpid())
	if err := nsexec.Create(ns, nil); err != nil {
		log.Fatal(err)
	}
	defer nsexec.Delete(ns)

	total := map[string]*result{}
	for round := range *rounds {
		for _, m := range modes {
			r := run(ns, m, *handovers)
			fmt.Fprintf(os.Stderr, "round %d, %-28s %d answered, failed new %d, failed keep-alive %d, resets %d, RSTs %d, %v %v\n",
				round+1, m, r.ok, r.failedNew, r.failedKeepAlive, r.resets, r.rsts, r.elapsed.Round(time.Millisecond), r.errs)
			t := total[m]
			if t == nil {
				t = &result{}
				total[m] = t
			}
			t.ok += r.ok
			t.failedNew += r.failedNew
			t.failedKeepAlive += r.failedKeepAlive
			t.resets += r.resets
			t.rsts += r.rsts
			t.elapsed += r.elapsed
		}
	}
	var b strings.Builder
	n := *rounds * *handovers
	fmt.Fprintf(&b, "%s; %d hand-overs per way (%d rounds of %d, the ways alternated), 3 new-connection GET workers and 3 keep-alive `fasthttp.HostClient`s with retries off, in a namespace of the harness's; `./bin/handoverbench %s`.\n\n",
		measure.Machine(), n, *rounds, *handovers, strings.Join(os.Args[1:], " "))
	b.WriteString("| hand-over | requests answered | failed, new connection | failed, keep-alive | of which reset | RSTs sent (namespace) | failed per hand-over | time per hand-over |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, m := range modes {
		t := total[m]
		failed := t.failedNew + t.failedKeepAlive
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %.2f | %v |\n", m, t.ok, t.failedNew, t.failedKeepAlive,
			t.resets, t.rsts, float64(failed)/float64(n), (t.elapsed / time.Duration(n)).Round(time.Millisecond))
	}
	fmt.Print(b.String())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
