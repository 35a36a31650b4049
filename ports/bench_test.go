package ports

import (
	"net/netip"
	"runtime"
	"testing"
)

// BenchmarkAcquireRelease is one lease and its release, with half the range
// already leased, spread over 64 destinations.
func BenchmarkAcquireRelease(b *testing.B) {
	if !supported {
		b.Skip(ErrUnsupported)
	}
	a, err := New(Config{Range: Range{40000, 47999}, Aging: -1})
	if err != nil {
		b.Fatal(err)
	}
	var dsts []netip.AddrPort
	for i := range 64 {
		dsts = append(dsts, netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}), 80))
	}
	for _, d := range dsts {
		for range 4000 {
			if _, err := a.Acquire(d); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer() // the quarter-million leases above are setup
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l, err := a.Acquire(dsts[i%len(dsts)])
			if err != nil {
				b.Fatal(err)
			}
			l.Release(PeerClose)
			i++
		}
	})
}
