package sockpool

import (
	"context"
	"testing"
)

// BenchmarkGet is the hand-out: a receive from a full pool and a Detach.
// Closing the sockets is outside the timer.
func BenchmarkGet(b *testing.B) {
	const batch = 1000
	ctx := context.Background()
	b.ReportAllocs()
	fds := make([]int, 0, batch)
	for b.Loop() {
		b.StopTimer()
		p, err := New(Config{Size: batch, CheckInterval: 1 << 62})
		if err != nil {
			b.Skip(err)
		}
		b.StartTimer()
		for range batch {
			s, err := p.Get(ctx)
			if err != nil {
				b.Fatal(err)
			}
			fd, _ := s.Detach()
			fds = append(fds, fd)
		}
		b.StopTimer()
		p.Close()
		for _, fd := range fds {
			closeFD(fd)
		}
		fds = fds[:0]
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/socket")
}
