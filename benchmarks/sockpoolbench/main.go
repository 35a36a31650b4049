// Command sockpoolbench measures what it costs to obtain N TCP sockets
// inside another network namespace, three ways:
//
//	setns per socket   LockOSThread; for each socket: setns in, socket(), setns out
//	setns per batch    LockOSThread; setns in; N × socket(); setns out
//	Pool.Get           a sockpool.Pool already full, N × Get
//	Pool.Get ×16       the same, drained by 16 goroutines at once
//
// Options are the pool's defaults in every case (TCP_NODELAY and keep-alive
// set at creation), so all four make the same sockets. It creates its own
// namespace (root and iproute2 needed) and alternates the methods over
// rounds; figures are medians.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"github.com/connopt/connopt/benchmarks/internal/measure"
	"github.com/connopt/connopt/internal/nsexec"
	"github.com/connopt/connopt/internal/rawsock"
	"github.com/connopt/connopt/sockopt"
	"github.com/connopt/connopt/sockpool"
)

var methods = []string{"setns per socket", "setns per batch", "Pool.Get", "Pool.Get ×16"}

// Pool's default socket options, applied by the first two methods too.
var opts = rawsock.TCPOptions(sockopt.Options{})

func main() {
	rounds := flag.Int("rounds", 5, "alternated rounds")
	out := flag.String("out", "", "also write the table to this file")
	flag.Parse()
	if os.Geteuid() != 0 {
		log.Fatal("sockpoolbench needs root: it creates a network namespace")
	}
	name := fmt.Sprintf("connopt-sockpoolbench-%d", os.Getpid())
	if err := nsexec.Create(name, nil); err != nil {
		log.Fatalf("%v (apt-get install -y iproute2)", err)
	}
	defer nsexec.Delete(name)
	target, err := netns.GetFromName(name)
	if err != nil {
		log.Fatal(err)
	}
	defer target.Close()

	sizes := []int{100, 1000}
	res := map[string]map[int][]time.Duration{}
	for _, m := range methods {
		res[m] = map[int][]time.Duration{}
	}
	for r := range *rounds {
		for _, n := range sizes {
			for _, m := range methods {
				d, err := obtain(m, name, target, n)
				if err != nil {
					log.Fatalf("%s, %d sockets: %v", m, n, err)
				}
				res[m][n] = append(res[m][n], d)
				fmt.Fprintf(os.Stderr, "round %d %-17s %5d sockets: %8.3f µs/socket\n", r+1, m, n, perSocket(d, n))
			}
		}
	}
	table := render(res, sizes, *rounds)
	fmt.Print(table)
	if *out != "" {
		os.MkdirAll(filepath.Dir(*out), 0o755)
		if err := os.WriteFile(*out, []byte(table), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

func perSocket(d time.Duration, n int) float64 {
	return float64(d) / float64(time.Microsecond) / float64(n)
}

// obtain returns the time to obtain n sockets in the namespace; closing
// them is not timed.
func obtain(method, name string, target netns.NsHandle, n int) (time.Duration, error) {
	fds := make([]int, 0, n)
	defer func() {
		for _, fd := range fds {
			rawsock.Close(fd)
		}
	}()
	switch method {
	case "setns per socket", "setns per batch":
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return 0, err
		}
		defer orig.Close()
		perSocket := method == "setns per socket"
		t0 := time.Now()
		if !perSocket {
			if err := netns.Set(target); err != nil {
				return 0, err
			}
		}
		for range n {
			if perSocket {
				if err := netns.Set(target); err != nil {
					return 0, err
				}
			}
			fd, err := rawsock.NewTCPSocket(false, opts)
			if err != nil {
				return 0, err
			}
			fds = append(fds, fd)
			if perSocket {
				if err := netns.Set(orig); err != nil {
					return 0, err // the thread stays locked and dies with main
				}
			}
		}
		if !perSocket {
			if err := netns.Set(orig); err != nil {
				return 0, err
			}
		}
		d := time.Since(t0)
		runtime.UnlockOSThread()
		return d, nil
	}

	p, err := sockpool.New(sockpool.Config{Namespace: name, Size: n})
	if err != nil {
		return 0, err
	}
	defer p.Close()
	for p.Stats().Size < n { // New returns after the first fill; be sure
		time.Sleep(time.Millisecond)
	}
	workers := 1
	if method == "Pool.Get ×16" {
		workers = 16
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	var firstErr error
	for w := range workers {
		share := n / workers
		if w < n%workers {
			share++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]int, 0, share)
			<-start
			for range share {
				s, err := p.Get(context.Background())
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				fd, _ := s.Detach()
				local = append(local, fd)
			}
			mu.Lock()
			fds = append(fds, local...)
			mu.Unlock()
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	return time.Since(t0), firstErr
}

func render(res map[string]map[int][]time.Duration, sizes []int, rounds int) string {
	var b strings.Builder
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Fprintf(&b, "Obtaining TCP sockets inside another network namespace; Linux %s, %s, %d cores; median of %d alternated rounds; %s.\n\n",
		strings.TrimSpace(string(kernel)), runtime.Version(), runtime.NumCPU(), rounds, time.Now().UTC().Format("2006-01-02"))
	b.WriteString("| method |")
	for _, n := range sizes {
		fmt.Fprintf(&b, " %d sockets: µs/socket | vs setns per socket |", n)
	}
	b.WriteString("\n|---|")
	b.WriteString(strings.Repeat("---:|---:|", len(sizes)))
	b.WriteString("\n")
	for _, m := range methods {
		fmt.Fprintf(&b, "| %s |", m)
		for _, n := range sizes {
			med := median(res[m][n])
			base := median(res["setns per socket"][n])
			fmt.Fprintf(&b, " %.3f | %.1fx |", perSocket(med, n), float64(base)/float64(med))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func median(ds []time.Duration) time.Duration { return measure.Median(ds) }
