package main

import (
	"testing"
	"time"
)

func TestHistBuckets(t *testing.T) {
	for _, d := range []time.Duration{0, time.Microsecond, 63 * time.Microsecond, 64 * time.Microsecond,
		100 * time.Microsecond, time.Millisecond, 37 * time.Millisecond, time.Second, time.Minute} {
		i := bucketOf(d)
		lo, hi := lowerBound(i), lowerBound(i+1)
		if d < lo || d >= hi && d >= 64*time.Microsecond {
			t.Errorf("%v in bucket %d [%v, %v)", d, i, lo, hi)
		}
		if d >= 64*time.Microsecond && float64(hi-lo)/float64(lo) > 0.016 {
			t.Errorf("bucket %d [%v, %v) wider than 1.6%%", i, lo, hi)
		}
	}
	var h hist
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	s := h.snapshot()
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {0.999, 999 * time.Millisecond}} {
		got := quantile(s, c.q)
		if float64(got) < 0.98*float64(c.want) || float64(got) > 1.0*float64(c.want) {
			t.Errorf("q%v = %v, want about %v", c.q, got, c.want)
		}
	}
}
