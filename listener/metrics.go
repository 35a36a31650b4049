package listener

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/connopt/connopt/internal/tcpconn"
)

// Metrics counts what one listener, or a group of shards, did. It implements
// prometheus.Collector: register it where you want it. The counters are
// plain atomics read at scrape time, so the accept and I/O paths never touch
// Prometheus. To register the Metrics of two listeners in one registry, wrap
// one registerer with prometheus.WrapRegistererWith and a distinguishing
// label.
type Metrics struct {
	accepted     atomic.Uint64
	conns        tcpconn.Counters
	acceptErrors [numAcceptErrReasons]atomic.Uint64
	backoffNanos atomic.Uint64
	// wrapped is set once a listener with WrapConns reports here: only
	// then are the active and peer-closed series known.
	wrapped atomic.Bool
}

// NewMetrics returns zeroed counters.
func NewMetrics() *Metrics { return &Metrics{} }

// Stats is a snapshot of Metrics.
type Stats struct {
	Accepted uint64
	// Active, PeerClosedRead and PeerClosedWrite are counted only for
	// connections accepted with Config.WrapConns (the standard
	// *net.TCPConn has no hook to count them); they are 0 otherwise, and
	// the collector leaves their series out.
	Active          int64
	PeerClosedRead  uint64
	PeerClosedWrite uint64
	// AcceptErrors is keyed by reason: emfile, enfile, enobufs, enomem,
	// other. Closing the listener is not an error.
	AcceptErrors map[string]uint64
	// AcceptBackoff is the total time Accept slept waiting for resources.
	AcceptBackoff time.Duration
}

// Snapshot reads the counters.
func (m *Metrics) Snapshot() Stats {
	s := Stats{
		Accepted:        m.accepted.Load(),
		Active:          m.conns.Active.Load(),
		PeerClosedRead:  m.conns.PeerClosedRead.Load(),
		PeerClosedWrite: m.conns.PeerClosedWrite.Load(),
		AcceptErrors:    make(map[string]uint64, numAcceptErrReasons),
		AcceptBackoff:   time.Duration(m.backoffNanos.Load()),
	}
	for i := range m.acceptErrors {
		s.AcceptErrors[acceptErrNames[i]] = m.acceptErrors[i].Load()
	}
	return s
}

var (
	descAccepted = prometheus.NewDesc("connopt_listener_accepted_connections_total",
		"Connections accepted.", nil, nil)
	descActive = prometheus.NewDesc("connopt_listener_active_connections",
		"Accepted connections not yet closed.", nil, nil)
	descPeerClosed = prometheus.NewDesc("connopt_listener_peer_closed_total",
		"Reads and writes that failed because the peer had gone away (EPIPE, ECONNRESET).", []string{"op"}, nil)
	descAcceptErrors = prometheus.NewDesc("connopt_listener_accept_errors_total",
		"Failed accept calls by reason; emfile, enfile, enobufs and enomem are retried after a back-off.", []string{"reason"}, nil)
	descBackoff = prometheus.NewDesc("connopt_listener_accept_backoff_seconds_total",
		"Time Accept spent sleeping while out of descriptors or memory.", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAccepted, descActive, descPeerClosed, descAcceptErrors, descBackoff} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descAccepted, prometheus.CounterValue, float64(m.accepted.Load()))
	if m.wrapped.Load() {
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(m.conns.Active.Load()))
		ch <- prometheus.MustNewConstMetric(descPeerClosed, prometheus.CounterValue, float64(m.conns.PeerClosedRead.Load()), "read")
		ch <- prometheus.MustNewConstMetric(descPeerClosed, prometheus.CounterValue, float64(m.conns.PeerClosedWrite.Load()), "write")
	}
	for i := range m.acceptErrors {
		ch <- prometheus.MustNewConstMetric(descAcceptErrors, prometheus.CounterValue, float64(m.acceptErrors[i].Load()), acceptErrNames[i])
	}
	ch <- prometheus.MustNewConstMetric(descBackoff, prometheus.CounterValue, time.Duration(m.backoffNanos.Load()).Seconds())
}
