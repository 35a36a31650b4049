package client

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/connopt/connopt/sockpool"
)

var (
	descDials = prometheus.NewDesc("connopt_client_dials_total",
		"Dial attempts.", nil, nil)
	descDialErrors = prometheus.NewDesc("connopt_client_dial_errors_total",
		"Failed dials by reason.", []string{"reason"}, nil)
	descDeadRetries = prometheus.NewDesc("connopt_client_dead_connection_retries_total",
		"Requests retried on a new connection after a pooled one turned out closed by the upstream (seen on write or read, never probed).", nil, nil)
	descGoneIdle = prometheus.NewDesc("connopt_client_peer_closed_idle_total",
		"Dialed connections the upstream closed (FIN or RST seen by the dialer's watcher) while idle: nothing written since the last response.", nil, nil)
	descRedirected = prometheus.NewDesc("connopt_client_requests_redirected_total",
		"Requests moved to another connection before a byte was written, because the upstream had closed the one they were given.", nil, nil)
	descWriteRetries = prometheus.NewDesc("connopt_client_write_retries_total",
		"Idempotent requests retried after a write failed on a connection the upstream had closed (some bytes may have left).", nil, nil)
	descUnwatched = prometheus.NewDesc("connopt_client_unwatched_connections_total",
		"Dialed connections that could not be registered with the dialer's watcher (epoll_ctl failed); they work as without the watch.", nil, nil)
	descActive = prometheus.NewDesc("connopt_client_active_connections",
		"Dialed connections not yet closed.", nil, nil)
	descPeerClosed = prometheus.NewDesc("connopt_client_peer_closed_total",
		"Reads and writes that found the upstream gone (EPIPE, ECONNRESET).", []string{"op"}, nil)
)

// Describe implements prometheus.Collector.
func (d *Dialer) Describe(ch chan<- *prometheus.Desc) {
	for _, desc := range []*prometheus.Desc{descDials, descDialErrors, descDeadRetries, descGoneIdle, descRedirected, descWriteRetries, descUnwatched, descActive, descPeerClosed} {
		ch <- desc
	}
	d.connectTime.Describe(ch)
	sockpool.Describe(ch)
}

// Collect implements prometheus.Collector: the dialer's counters, its
// connect-time histogram, and its socket pools' series.
func (d *Dialer) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descDials, prometheus.CounterValue, float64(d.dials.Load()))
	for i := range d.dialErrors {
		ch <- prometheus.MustNewConstMetric(descDialErrors, prometheus.CounterValue, float64(d.dialErrors[i].Load()), reasonNames[i])
	}
	ch <- prometheus.MustNewConstMetric(descDeadRetries, prometheus.CounterValue, float64(d.deadRetries.Load()))
	st := d.Stats()
	ch <- prometheus.MustNewConstMetric(descGoneIdle, prometheus.CounterValue, float64(st.GoneIdle))
	ch <- prometheus.MustNewConstMetric(descRedirected, prometheus.CounterValue, float64(st.Redirected))
	ch <- prometheus.MustNewConstMetric(descWriteRetries, prometheus.CounterValue, float64(st.WriteRetries))
	ch <- prometheus.MustNewConstMetric(descUnwatched, prometheus.CounterValue, float64(st.Unwatched))
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(d.conns.Active.Load()))
	ch <- prometheus.MustNewConstMetric(descPeerClosed, prometheus.CounterValue, float64(d.conns.PeerClosedRead.Load()), "read")
	ch <- prometheus.MustNewConstMetric(descPeerClosed, prometheus.CounterValue, float64(d.conns.PeerClosedWrite.Load()), "write")
	d.connectTime.Collect(ch)
	for i := range d.pools {
		if sp := d.pools[i].Load(); sp != nil {
			sp.pool.Collect(ch)
		}
	}
}

// Stats is a snapshot of a Dialer's counters.
type Stats struct {
	Dials        uint64
	DialErrors   map[string]uint64
	DeadRetries  uint64
	GoneIdle     uint64 // connections the upstream closed while idle
	Redirected   uint64 // requests moved before a byte was written
	WriteRetries uint64 // idempotent requests retried after a failed write (bytes may have left)
	Unwatched    uint64 // connections the watcher could not register
	Active       int64
}

// Stats reads the counters.
func (d *Dialer) Stats() Stats {
	s := Stats{Dials: d.dials.Load(), DeadRetries: d.deadRetries.Load(), Active: d.conns.Active.Load(), DialErrors: map[string]uint64{},
		Redirected: d.redirected.Load(), WriteRetries: d.writeRetries.Load()}
	if d.watch != nil {
		s.GoneIdle, s.Unwatched = d.watch.goneIdle.Load(), d.watch.unwatched.Load()
	}
	for i := range d.dialErrors {
		s.DialErrors[reasonNames[i]] = d.dialErrors[i].Load()
	}
	return s
}
