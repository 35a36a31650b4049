package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// hist is an HDR-style histogram of durations: log-linear buckets, 64 per
// power of two from 1 µs, so every value is kept within 1.6% and recording
// is one atomic add. Histograms of several workers merge by adding counts.
type hist struct {
	counts [64 * 40]atomic.Uint64 // 2^40 µs is 12 days
}

const subBuckets = 64

func bucketOf(d time.Duration) int {
	us := uint64(d / time.Microsecond)
	if us < subBuckets {
		return int(us)
	}
	exp := bits.Len64(us) - 7 // us >> exp is in [64, 128)
	idx := (exp+1)*subBuckets + int(us>>exp) - subBuckets
	return min(idx, len(hist{}.counts)-1)
}

// lowerBound is the smallest duration in bucket i.
func lowerBound(i int) time.Duration {
	if i < subBuckets {
		return time.Duration(i) * time.Microsecond
	}
	exp := i/subBuckets - 1
	mant := uint64(i%subBuckets + subBuckets)
	return time.Duration(mant<<exp) * time.Microsecond
}

func (h *hist) record(d time.Duration) { h.counts[bucketOf(d)].Add(1) }

// snapshot returns the non-zero buckets, index to count.
func (h *hist) snapshot() map[int]uint64 {
	m := map[int]uint64{}
	for i := range h.counts {
		if c := h.counts[i].Load(); c != 0 {
			m[i] = c
		}
	}
	return m
}

// quantile of merged bucket counts; 0 when empty.
func quantile(counts map[int]uint64, q float64) time.Duration {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i := 0; i < len(hist{}.counts); i++ {
		seen += counts[i]
		if seen >= rank {
			return lowerBound(i)
		}
	}
	return lowerBound(len(hist{}.counts) - 1)
}
