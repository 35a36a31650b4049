# connopt: the two commands that matter are `make run` and `make test`.
GO ?= go

.PHONY: run proxy test vet bench bench-go bench-listener bench-ports bench-sockpool bench-client bench-deps

## run: the hello-world fasthttp server on connopt's listener, with /metrics, on 127.0.0.1:8080
run:
	$(GO) run ./examples/hello -addr 127.0.0.1:8080

## proxy: the reverse-proxy example, with an upstream in a namespace it creates (root)
proxy:
	$(GO) run ./examples/proxy -demo -addr 127.0.0.1:8080

## test: vet and race-enabled tests against real sockets (some need root and skip without it)
test: vet
	$(GO) test -race -count=1 ./...

vet:
	$(GO) vet ./...

## bench: every benchmark: in-process (go test -bench) and the wrk/perf harnesses
bench: bench-go bench-listener bench-ports bench-sockpool bench-client

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## bench-listener: stock net.Listen vs listener.Listen under wrk, syscalls counted by perf
bench-listener: bench-deps
	$(GO) build -o bin/listenerbench ./benchmarks/listenerbench
	./bin/listenerbench -out benchmarks/results/listener.md

## bench-ports: dial time as a narrowed port range fills, per source-port strategy (root: makes a namespace)
bench-ports: bench-deps
	$(GO) build -o bin/portsbench ./benchmarks/portsbench
	./bin/portsbench -out benchmarks/results/ports.md

## bench-sockpool: sockets obtained inside a namespace: setns per socket, per batch, Pool.Get (root)
bench-sockpool: bench-deps
	$(GO) build -o bin/sockpoolbench ./benchmarks/sockpoolbench
	./bin/sockpoolbench -out benchmarks/results/sockpool.md

## bench-client: syscalls per dial and per request, namespace dial latency, source-port dial latency (root)
bench-client: bench-deps
	$(GO) build -o bin/clientbench ./benchmarks/clientbench
	./bin/clientbench -out benchmarks/results/client.md

## bench-deps: wrk and perf from Debian's packages, if missing
bench-deps:
	@command -v wrk >/dev/null && command -v perf >/dev/null && command -v taskset >/dev/null && command -v ip >/dev/null || \
		{ apt-get update && apt-get install -y wrk linux-perf util-linux iproute2; }
