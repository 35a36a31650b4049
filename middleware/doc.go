// Package middleware wraps fasthttp.RequestHandler with what a production
// server needs around its handler: Prometheus metrics (Metrics), a panic
// barrier (Recover) and a bound on in-flight requests (Limit). They compose
// with Chain.
//
// Each costs a few atomic operations per request and no allocation; label
// values are bounded (methods outside the standard set count as "OTHER", the
// status code is the only other label), so a hostile client cannot grow the
// series count. Collectors register on the Registerer given; registering the
// same middleware twice on one registry reuses the first collectors, so two
// servers can share a registry.
package middleware
