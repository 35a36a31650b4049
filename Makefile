# connopt: the two commands that matter are `make run` and `make test`.
GO ?= go

.PHONY: run proxy fiber connscale connscale-1m connscale-gnet test soak vet bench bench-quick bench-go bench-http bench-listener bench-ports bench-sockpool bench-client bench-idle bench-handover bench-batching bench-deps

## run: the hello-world fasthttp server on connopt's listener, with /metrics, on 127.0.0.1:8080
run:
	$(GO) build -o bin/hello ./examples/hello
	exec ./bin/hello -addr 127.0.0.1:8080

## proxy: the reverse-proxy example, with an upstream in a namespace it creates (root)
proxy:
	$(GO) build -o bin/proxy ./examples/proxy
	exec ./bin/proxy -demo -addr 127.0.0.1:8080

## fiber: the Fiber v2 example on connopt's listener (add -prefork N for N processes; SIGHUP hands over)
fiber:
	cd examples/fiber && $(GO) build -o ../../bin/fiber .
	exec ./bin/fiber -addr 127.0.0.1:8080

## connscale: hold 100,000 ping-pong connections for 60 s on this machine (root for -netns; see README)
connscale:
	cd benchmarks && $(GO) build -o ../bin/connscale ./connscale
	./bin/connscale run -conns 100000 -rate 5000 -interval 10s -hold 60s

## connscale-1m: hold 1,000,000 connections for 60 s, a ping a minute, event loops on both ends (root for the slab figures; about 8.5 minutes; see README)
connscale-1m:
	cd benchmarks && $(GO) build -o ../bin/connscale ./connscale
	./bin/connscale run -conns 1000000 -rate 2500 -interval 60s -hold 60s -loop -server-loop -tick 25ms

## connscale-gnet: connscale's event-loop client against gnet v2's, alternated 3 times each (50,000 connections, a ping every 5 s; about 6 minutes)
connscale-gnet:
	cd benchmarks && $(GO) build -o ../bin/connscale ./connscale
	for i in 1 2 3; do for m in loop gnet; do \
		echo "== -$$m, run $$i"; \
		./bin/connscale run -conns 50000 -rate 4000 -interval 5s -hold 30s -server-loop -per-worker 9000 -$$m | grep -E 'failed \||RTT|CPU per ping|memory per connection|workers' || exit 1; \
	done; done

## test: vet and race-enabled tests against real sockets (some need root and skip without it)
test: vet
	$(GO) test -race -count=1 ./...
	cd benchmarks && $(GO) test -race -count=1 ./...
	cd examples/fiber && $(GO) test -race -count=1 ./...

## soak: the fuzzers for a bounded time each, the fault suite repeated, and a 10-minute load soak (root)
FUZZTIME ?= 30s
SOAK ?= 10m
soak:
	$(GO) test -run '^$$' -fuzz '^FuzzParseReserved$$' -fuzztime $(FUZZTIME) ./ports
	$(GO) test -run '^$$' -fuzz '^FuzzParseRange$$' -fuzztime $(FUZZTIME) ./ports
	$(GO) test -run '^$$' -fuzz '^FuzzPath$$' -fuzztime $(FUZZTIME) ./internal/nsexec
	$(GO) test -run '^$$' -fuzz '^FuzzResolve$$' -fuzztime $(FUZZTIME) ./client
	cd benchmarks && $(GO) test -run '^$$' -fuzz '^FuzzServePings$$' -fuzztime $(FUZZTIME) ./connscale
	$(GO) test -race -count=5 ./reliability ./listener ./server
	CONNOPT_SOAK=$(SOAK) $(GO) test -run '^TestSoak$$' -count=1 -timeout 30m -v ./reliability

vet:
	$(GO) vet ./...
	cd benchmarks && $(GO) vet ./...
	cd benchmarks/gnet && $(GO) vet ./...
	cd examples/fiber && $(GO) vet ./...

## bench: every benchmark, about 18 minutes on 2 cores: the hello-world comparison, the harnesses, go test -bench
bench: bench-http bench-ports bench-sockpool bench-client bench-idle bench-handover bench-batching bench-go

## bench-quick: a half-minute subset: stock fasthttp vs connopt, keep-alive and churn, one round
bench-quick: bench-deps
	cd benchmarks && $(GO) build -o ../bin/httpbench ./httpbench
	./bin/httpbench -servers fasthttp,connopt -loads keep-alive,churn -rounds 1 -d 3s

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 20000x ./...
	cd benchmarks && $(GO) test -run '^$$' -bench . -benchmem -benchtime 20000x ./...

## bench-http: seven hello-world servers x three loads, alternated; writes benchmarks/results/{latest.md,cpu.svg,syscalls.svg}
bench-http: bench-deps
	cd benchmarks && $(GO) build -o ../bin/httpbench ./httpbench
	cd benchmarks/gnet && $(GO) build -o ../../bin/gnet-hello .
	./bin/httpbench -gnet bin/gnet-hello -rounds 3 -d 3s -out benchmarks/results

## bench-listener: stock net.Listen vs listener.Listen, plain and with WrapConns
bench-listener: bench-deps
	cd benchmarks && $(GO) build -o ../bin/httpbench ./httpbench
	./bin/httpbench -servers fasthttp,connopt,connopt-wrap -loads keep-alive,churn -rounds 7 -d 5s

## bench-ports: dial time as a narrowed port range fills, per source-port strategy (root: makes a namespace)
bench-ports: bench-deps
	cd benchmarks && $(GO) build -o ../bin/portsbench ./portsbench
	./bin/portsbench -out benchmarks/results/ports.md

## bench-sockpool: sockets obtained inside a namespace: setns per socket, per batch, Pool.Get (root)
bench-sockpool: bench-deps
	cd benchmarks && $(GO) build -o ../bin/sockpoolbench ./sockpoolbench
	./bin/sockpoolbench -out benchmarks/results/sockpool.md

## bench-client: syscalls (every thread) and CPU per dial and per request, namespace dial latency, source-port dial latency, where a dial's CPU goes (root); then requests against nginx with 2 s and 100 ms keep-alive timeouts
bench-client: bench-deps
	cd benchmarks && $(GO) build -o ../bin/clientbench ./clientbench && $(GO) build -o ../bin/idlebench ./idlebench
	./bin/clientbench -out benchmarks/results/client.md
	./bin/idlebench -no-fasthttp -nginx-keepalive 2s,100ms -nginx-requests 20000 -out benchmarks/results/client-nginx.md

## bench-idle: requests on connections the upstream closed while idle: stock HostClient vs connopt without and with the peer watch, fasthttp and nginx upstreams
bench-idle: bench-deps
	cd benchmarks && $(GO) build -o ../bin/idlebench ./idlebench
	./bin/idlebench -out benchmarks/results/idle.md

## bench-handover: clients during 60 hand-overs to a new process: fasthttp reuseport (stock), connopt server with its own sockets, connopt prefork (root)
bench-handover:
	cd benchmarks && $(GO) build -o ../bin/handoverbench ./handoverbench
	./bin/handoverbench -handovers 20 -rounds 3 -out benchmarks/results/handover.md

## bench-batching: datagrams per second and syscalls per datagram, one write per datagram vs sendmmsg
bench-batching:
	$(GO) test -run '^$$' -bench Send -benchtime 200000x ./batching

## bench-deps: wrk and perf from Debian's packages, if missing
bench-deps:
	@command -v wrk >/dev/null && command -v perf >/dev/null && command -v taskset >/dev/null && command -v ip >/dev/null && command -v nginx >/dev/null || \
		{ apt-get update && apt-get install -y wrk linux-perf util-linux iproute2 nginx-light; }
