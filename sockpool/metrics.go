package sockpool

import "github.com/prometheus/client_golang/prometheus"

var (
	descCreated = prometheus.NewDesc("connopt_sockpool_sockets_created_total",
		"Sockets created inside the namespace by the refill thread.", []string{"namespace"}, nil)
	descHandedOut = prometheus.NewDesc("connopt_sockpool_sockets_handed_out_total",
		"Sockets returned by Get.", []string{"namespace"}, nil)
	descRefills = prometheus.NewDesc("connopt_sockpool_refills_total",
		"Refill batches.", []string{"namespace"}, nil)
	descWaits = prometheus.NewDesc("connopt_sockpool_empty_waits_total",
		"Get calls that found the pool empty and waited.", []string{"namespace"}, nil)
	descDiscarded = prometheus.NewDesc("connopt_sockpool_sockets_discarded_total",
		"Pooled sockets closed unused (namespace gone or replaced, pool closed).", []string{"namespace"}, nil)
	descSize = prometheus.NewDesc("connopt_sockpool_sockets",
		"Sockets in the pool now.", []string{"namespace"}, nil)
	descChanges = prometheus.NewDesc("connopt_sockpool_namespace_changes_total",
		"Times the namespace's name or path was found gone or leading elsewhere.", []string{"namespace"}, nil)
)

// Describe sends the descriptors of every pool's series, for collectors
// (such as client.Dialer) that collect pools they make later.
func Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCreated, descHandedOut, descRefills, descWaits, descDiscarded, descSize, descChanges} {
		ch <- d
	}
}

// Describe implements prometheus.Collector.
func (p *Pool) Describe(ch chan<- *prometheus.Desc) { Describe(ch) }

// Collect implements prometheus.Collector. Register a Pool or the Set that
// holds it, not both.
func (p *Pool) Collect(ch chan<- prometheus.Metric) {
	s := p.Stats()
	for _, m := range []struct {
		d *prometheus.Desc
		t prometheus.ValueType
		v float64
	}{
		{descCreated, prometheus.CounterValue, float64(s.Created)},
		{descHandedOut, prometheus.CounterValue, float64(s.HandedOut)},
		{descRefills, prometheus.CounterValue, float64(s.Refills)},
		{descWaits, prometheus.CounterValue, float64(s.Waits)},
		{descDiscarded, prometheus.CounterValue, float64(s.Discarded)},
		{descSize, prometheus.GaugeValue, float64(s.Size)},
		{descChanges, prometheus.CounterValue, float64(s.NamespaceChanges)},
	} {
		ch <- prometheus.MustNewConstMetric(m.d, m.t, m.v, p.label)
	}
}
