package ports

// pool is the state of one (source address, destination) pair under the
// Tracked strategy. Every port of the range is in exactly one of four
// places: never used yet (offsets from cursor on), leased, aging, or free.
// Only ports that have been used cost memory, so a destination touched once
// costs a few words, and a pool that has nothing leased or aging is dropped.
type pool struct {
	start  int // where this pool begins in the range, random so pools spread
	cursor int // how many offsets from start have ever been handed out
	free   []uint16
	aging  []agingPort // FIFO; with one aging period, release order is expiry order
	head   int         // first live entry of aging
	leased int
}

type agingPort struct {
	idx   uint16 // index into Allocator.ports
	until int64  // monotonic nanoseconds
}

// take returns the index of a port that is neither leased nor aging, or
// false when there is none.
func (p *pool) take(now int64, size int) (uint16, bool) {
	p.expire(now)
	if n := len(p.free); n > 0 {
		idx := p.free[n-1]
		p.free = p.free[:n-1]
		p.leased++
		return idx, true
	}
	if p.cursor < size {
		idx := uint16((p.start + p.cursor) % size)
		p.cursor++
		p.leased++
		return idx, true
	}
	return 0, false
}

// give returns a leased port: to aging until the given time, or straight to
// the free list when until is 0.
func (p *pool) give(idx uint16, until int64) {
	p.leased--
	if until == 0 {
		p.free = append(p.free, idx)
		return
	}
	p.aging = append(p.aging, agingPort{idx, until})
}

// expire moves ports whose aging period has passed to the free list.
func (p *pool) expire(now int64) {
	for p.head < len(p.aging) && p.aging[p.head].until <= now {
		p.free = append(p.free, p.aging[p.head].idx)
		p.head++
	}
	if p.head == len(p.aging) {
		p.aging, p.head = p.aging[:0], 0
	} else if p.head > 64 && p.head > len(p.aging)/2 {
		p.aging = p.aging[:copy(p.aging, p.aging[p.head:])]
		p.head = 0
	}
}

// agingAt counts the ports still aging at now, without changing the pool.
func (p *pool) agingAt(now int64) int {
	live := p.aging[p.head:]
	// Entries are sorted by until: find the first one still aging.
	lo, hi := 0, len(live)
	for lo < hi {
		m := (lo + hi) / 2
		if live[m].until <= now {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return len(live) - lo
}

// idle reports whether the pool holds nothing that needs remembering.
func (p *pool) idle() bool { return p.leased == 0 && p.head == len(p.aging) }
