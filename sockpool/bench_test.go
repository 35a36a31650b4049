package sockpool

import (
	"context"
	"testing"
)

// BenchmarkGet is the hand-out: a receive from a full pool and a Detach,
// one per iteration. Pools of 1,000 are made and the sockets closed with
// the timer stopped, so run it with a fixed count (make bench-go uses
// -benchtime 20000x): each socket costs about 5 µs to make, a hundred
// times what is measured.
func BenchmarkGet(b *testing.B) {
	const chunk = 1000
	ctx := context.Background()
	var p *Pool
	fds := make([]int, 0, chunk)
	refresh := func() {
		if p != nil {
			p.Close()
		}
		for _, fd := range fds {
			closeFD(fd)
		}
		fds = fds[:0]
		var err error
		if p, err = New(Config{Size: chunk, CheckInterval: 1 << 62}); err != nil {
			b.Skip(err)
		}
	}
	b.StopTimer()
	refresh()
	b.ReportAllocs()
	b.StartTimer()
	for i := 0; i < b.N; i++ {
		if len(fds) == chunk-chunk/4 { // before the low watermark wakes the refill
			b.StopTimer()
			refresh()
			b.StartTimer()
		}
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
}
