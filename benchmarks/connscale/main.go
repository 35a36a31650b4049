// Command connscale measures how many TCP connections this machine holds,
// with connopt's own parts: the server side accepts with listener, the
// client side dials with client (on a ports allocator), and
// every connection sends "Ping" every interval and expects "Pong" within a
// timeout. It follows Erlang's connscale tester (a server and clients
// holding ping-pong connections to find what one machine holds), with its
// to-do list done: configurable ping interval and timeout, and
// statistics (connections per second, open, failures with their reason,
// pong RTT percentiles from an HDR-style histogram for the whole run and
// for the hold, memory per connection on both ends and in the kernel, CPU
// per ping).
//
// A client worker holds its connections with a goroutine each (default),
// from one epoll loop of its own (-loop), or with gnet v2's client (-gnet,
// for comparison); a server worker serves with a goroutine each or from
// one epoll loop (-loop; run's -server-loop).
//
//	connscale run -conns 100000 -interval 10s -hold 60s [-netns 2]
//	connscale server -addr 127.0.0.1:9100
//	connscale client -server 127.0.0.1:9100 -conns 10000 -sources 127.0.1.1
//
// run does a whole local experiment: server workers (SO_REUSEPORT shards
// in separate processes) and client workers, each under the descriptor
// limit (RLIMIT_NOFILE is 20,000 here and cannot be raised), the ramp, the
// hold, a progress line every second, a summary, and the clean-up. With
// -netns N the server lives in a namespace of its own and the clients in N
// namespaces joined to it by veth pairs (198.18.0.0/15; root and iproute2
// needed). Each worker serves its counters on /metrics (on loopback, in its
// namespace) for a Prometheus that aggregates a multi-host run; server and
// client commands run on any host.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net/netip"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	switch cmd {
	case "server":
		id := fs.Int("id", 0, "worker number")
		addr := fs.String("addr", "127.0.0.1:9100", "address; shards in several processes share it with SO_REUSEPORT")
		fs.StringVar(&metricsAddr, "metrics", metricsAddr, "address of this worker's /metrics (a fixed one for a Prometheus on another host)")
		fs.BoolVar(&kernelMetrics, "kernel-metrics", false, "also expose the kernel's slab caches (root; one worker per host)")
		fs.BoolVar(&serverLoop, "loop", false, "serve the connections from one event loop (epoll) instead of a goroutine each")
		fs.Parse(args)
		stop := make(chan struct{})
		go func() { // stdin closing is the stop signal from run
			bufio.NewReader(os.Stdin).ReadString(0)
			close(stop)
		}()
		if err := runServerWorker(*id, *addr, stop); err != nil {
			log.Fatal(err)
		}
	case "client":
		var o clientOpts
		var sources string
		fs.IntVar(&o.id, "id", 0, "worker number")
		fs.StringVar(&o.server, "server", "127.0.0.1:9100", "server ip:port")
		fs.IntVar(&o.conns, "conns", 1000, "connections")
		fs.IntVar(&o.rate, "rate", 1000, "new connections per second")
		fs.DurationVar(&o.interval, "interval", 10*time.Second, "time between pings on a connection")
		fs.DurationVar(&o.timeout, "timeout", time.Second, "how long a pong may take")
		fs.DurationVar(&o.hold, "hold", 60*time.Second, "how long to hold the connections after the ramp")
		fs.StringVar(&sources, "sources", "", "source addresses, comma-separated (ports allocator per source and destination)")
		fs.BoolVar(&o.loop, "loop", false, "hold the connections from one event loop (epoll) instead of a goroutine each")
		fs.DurationVar(&o.tick, "tick", 5*time.Millisecond, "with -loop or -gnet: due pings wait for the next tick after the last batch, so they leave together (0: each on its own)")
		fs.BoolVar(&o.gnet, "gnet", false, "hold the connections with gnet v2's client (two descriptors per connection)")
		fs.StringVar(&metricsAddr, "metrics", metricsAddr, "address of this worker's /metrics (a fixed one for a Prometheus on another host)")
		fs.BoolVar(&kernelMetrics, "kernel-metrics", false, "also expose the kernel's slab caches (root; one worker per host)")
		fs.Parse(args)
		for _, s := range strings.Split(sources, ",") {
			if s == "" {
				continue
			}
			a, err := netip.ParseAddr(s)
			if err != nil {
				log.Fatalf("-sources: %v", err)
			}
			o.sources = append(o.sources, a)
		}
		if err := runClientWorker(o); err != nil {
			log.Fatal(err)
		}
	case "run":
		var o runOpts
		fs.IntVar(&o.conns, "conns", 10000, "connections in all")
		fs.IntVar(&o.rate, "rate", 5000, "new connections per second in all")
		fs.DurationVar(&o.interval, "interval", 10*time.Second, "time between pings on a connection")
		fs.DurationVar(&o.timeout, "timeout", time.Second, "how long a pong may take")
		fs.DurationVar(&o.hold, "hold", 60*time.Second, "how long to hold the connections after the ramp")
		fs.IntVar(&o.perWorker, "per-worker", 18000, "connections per worker process (the fd limit is 20,000)")
		fs.IntVar(&o.netns, "netns", 0, "client namespaces joined by veth to a server namespace (0: all on loopback)")
		fs.BoolVar(&o.loop, "loop", false, "client workers hold their connections from one event loop (epoll) instead of a goroutine each")
		fs.DurationVar(&o.tick, "tick", 5*time.Millisecond, "with -loop or -gnet: due pings wait for the next tick after the last batch, so they leave together (0: each on its own)")
		fs.BoolVar(&o.gnet, "gnet", false, "client workers hold their connections with gnet v2's client (two descriptors each: use -per-worker 9000)")
		fs.BoolVar(&o.serverLoop, "server-loop", false, "server workers serve from one event loop (epoll) instead of a goroutine per connection")
		fs.BoolVar(&o.noSources, "no-sources", false, "let the kernel pick source address and port (shows the cap the allocator lifts)")
		fs.Parse(args)
		o.log = os.Stdout
		s, err := runExperiment(o)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Print(s.table())
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: connscale run|server|client [flags]; connscale run -h for the flags")
	os.Exit(2)
}
