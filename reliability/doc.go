// Package reliability holds connopt's fault and bad-input suite: tests that
// try faults on purpose against real sockets (hostile and vanishing
// clients, stops under load) and assert what connopt does. The fast cases
// run in make test; make soak runs the fuzzers for a bounded time.
package reliability
