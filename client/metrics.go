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
	descActive = prometheus.NewDesc("connopt_client_active_connections",
		"Dialed connections not yet closed.", nil, nil)
	descPeerClosed = prometheus.NewDesc("connopt_client_peer_closed_total",
		"Reads and writes that found the upstream gone (EPIPE, ECONNRESET).", []string{"op"}, nil)
)

// Describe implements prometheus.Collector.
func (d *Dialer) Describe(ch chan<- *prometheus.Desc) {
	for _, desc := range []*prometheus.Desc{descDials, descDialErrors, descDeadRetries, descActive, descPeerClosed} {
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
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(d.conns.Active.Load()))
	ch <- prometheus.MustNewConstMetric(descPeerClosed, prometheus.CounterValue, float64(d.conns.PeerClosedRead.Load()), "read")
	ch <- prometheus.MustNewConstMetric(descPeerClosed, prometheus.CounterValue, float64(d.conns.PeerClosedWrite.Load()), "write")
	d.connectTime.Collect(ch)
	d.mu.Lock()
	pools := d.pools
	d.mu.Unlock()
	for _, p := range pools {
		if p != nil {
			p.Collect(ch)
		}
	}
}

// Stats is a snapshot of a Dialer's counters.
type Stats struct {
	Dials       uint64
	DialErrors  map[string]uint64
	DeadRetries uint64
	Active      int64
}

// Stats reads the counters.
func (d *Dialer) Stats() Stats {
	s := Stats{Dials: d.dials.Load(), DeadRetries: d.deadRetries.Load(), Active: d.conns.Active.Load(), DialErrors: map[string]uint64{}}
	for i := range d.dialErrors {
		s.DialErrors[reasonNames[i]] = d.dialErrors[i].Load()
	}
	return s
}
