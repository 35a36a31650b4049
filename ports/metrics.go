package ports

import "github.com/prometheus/client_golang/prometheus"

var (
	descInUse = prometheus.NewDesc("connopt_ports_leases_in_use",
		"Source-port leases held by open or opening connections.", []string{"strategy"}, nil)
	descAging = prometheus.NewDesc("connopt_ports_aging",
		"Ports our side closed, waiting out the aging period before reuse.", []string{"strategy"}, nil)
	descLeases = prometheus.NewDesc("connopt_ports_leases_total",
		"Source-port leases handed out.", []string{"strategy"}, nil)
	descExhausted = prometheus.NewDesc("connopt_ports_exhausted_total",
		"Lease requests that found every source address and port for the destination in use or aging.", []string{"strategy"}, nil)
	descRangeSize = prometheus.NewDesc("connopt_ports_range_size",
		"Ports per source address: a (source, destination) pool is full at this many.", []string{"strategy"}, nil)
	descBusiest = prometheus.NewDesc("connopt_ports_busiest_pool",
		"Ports leased or aging in the fullest (source, destination) pool (Tracked; 0 for Kernel).", []string{"strategy"}, nil)
	descCollisions = prometheus.NewDesc("connopt_ports_collisions_total",
		"Ports found held by sockets outside the allocator and retried with another port.", []string{"strategy"}, nil)
)

// Describe implements prometheus.Collector.
func (a *Allocator) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInUse, descAging, descLeases, descExhausted, descCollisions, descRangeSize, descBusiest} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (a *Allocator) Collect(ch chan<- prometheus.Metric) {
	s := a.Stats()
	st := a.strategy.String()
	ch <- prometheus.MustNewConstMetric(descInUse, prometheus.GaugeValue, float64(s.InUse), st)
	ch <- prometheus.MustNewConstMetric(descAging, prometheus.GaugeValue, float64(s.Aging), st)
	ch <- prometheus.MustNewConstMetric(descLeases, prometheus.CounterValue, float64(s.Leases), st)
	ch <- prometheus.MustNewConstMetric(descExhausted, prometheus.CounterValue, float64(s.Exhausted), st)
	ch <- prometheus.MustNewConstMetric(descCollisions, prometheus.CounterValue, float64(s.Collisions), st)
	ch <- prometheus.MustNewConstMetric(descRangeSize, prometheus.GaugeValue, float64(s.RangeSize), st)
	ch <- prometheus.MustNewConstMetric(descBusiest, prometheus.GaugeValue, float64(s.Busiest), st)
}
