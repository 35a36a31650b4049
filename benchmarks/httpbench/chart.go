package main

import (
	"fmt"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// charts writes cpu.svg and syscalls.svg: grouped bars, one group per load,
// one bar per server.
func charts(o Options, loads []load, results map[string]map[string][]sample) error {
	for _, c := range []struct {
		file, title, unit string
		value             func(figures) float64
	}{
		{"cpu.svg", "Server CPU per request (churn: per connection)", "µs", func(f figures) float64 { return f.cpu }},
		{"syscalls.svg", "Server syscalls per request (churn: per connection)", "syscalls", func(f figures) float64 { return f.sys["total"] }},
	} {
		p := plot.New()
		p.Title.Text = c.title
		p.Y.Label.Text = c.unit
		n := len(o.Servers)
		// Bars fill most of each load's share of the width.
		w := vg.Points(9 * 72 * 0.75 / float64(len(loads)*n))
		for i, srv := range o.Servers {
			vals := make(plotter.Values, len(loads))
			for j, ld := range loads {
				vals[j] = c.value(summarize(results[ld.name][srv]))
			}
			bars, err := plotter.NewBarChart(vals, w)
			if err != nil {
				return fmt.Errorf("chart %s: %w", c.file, err)
			}
			bars.LineStyle.Width = 0
			bars.Color = plotutil.Color(i)
			bars.Offset = vg.Length(float64(i)-float64(n-1)/2) * w
			p.Add(bars)
			p.Legend.Add(srv, bars)
		}
		names := make([]string, len(loads))
		for i, ld := range loads {
			names[i] = ld.name
		}
		p.NominalX(names...)
		p.X.Min, p.X.Max = -0.5, float64(len(loads))-0.5
		p.Legend.Top = true
		p.Legend.Left = true
		if err := p.Save(9*vg.Inch, 4.5*vg.Inch, filepath.Join(o.Out, c.file)); err != nil {
			return fmt.Errorf("chart %s: %w", c.file, err)
		}
	}
	return nil
}
