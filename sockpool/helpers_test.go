package sockpool

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/connopt/connopt/internal/rawsock"
)

// collectorFor narrows c to the series of one descriptor.
func collectorFor(c prometheus.Collector, d *prometheus.Desc) prometheus.Collector {
	return filtered{c, d}
}

type filtered struct {
	c prometheus.Collector
	d *prometheus.Desc
}

func (f filtered) Describe(ch chan<- *prometheus.Desc) { ch <- f.d }
func (f filtered) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric, 64)
	go func() { f.c.Collect(all); close(all) }()
	for m := range all {
		if m.Desc() == f.d {
			ch <- m
		}
	}
}

func closeFD(fd int) { rawsock.Close(fd) }
