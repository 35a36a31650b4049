// Package server wires a production fasthttp server on connopt's listener:
// SO_REUSEPORT shards (one Serve loop each), timeouts and limits with safe
// defaults, Prometheus metrics at /metrics (on the same address or another),
// and a graceful stop on context cancellation or SIGINT/SIGTERM that stops
// accepting, lets requests in flight finish up to a deadline, lets
// keep-alive connections send one more request (answered with
// Connection: close) before closing those still idle, and then closes
// whatever is left. With Config.Prefork the same program serves from
// several processes and hands over to a new binary on SIGHUP (package
// prefork).
//
// Compose the handler with package middleware; register other collectors
// (ports, sockpool, client) on Server.Registry so one scrape shows all.
package server
