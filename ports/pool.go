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
	// aging holds ports our side closed, for the Aging period; collided
	// holds ports found held outside the allocator, for collisionAging.
	// Each queue has one period, so its release order is its expiry order.
	aging, collided fifo
	leased          int
}

type agingPort struct {
	idx   uint16 // index into Allocator.ports
	until int64  // monotonic nanoseconds
}

// fifo is a queue of aging ports that all wait the same period.
type fifo struct {
	q    []agingPort
	head int // first live entry
}

func (f *fifo) push(idx uint16, until int64) { f.q = append(f.q, agingPort{idx, until}) }

func (f *fifo) empty() bool { return f.head == len(f.q) }

// expire moves the ports whose time has come to free.
func (f *fifo) expire(now int64, free []uint16) []uint16 {
	for f.head < len(f.q) && f.q[f.head].until <= now {
		free = append(free, f.q[f.head].idx)
		f.head++
	}
	if f.head == len(f.q) {
		f.q, f.head = f.q[:0], 0
	} else if f.head > 64 && f.head > len(f.q)/2 {
		f.q = f.q[:copy(f.q, f.q[f.head:])]
		f.head = 0
	}
	return free
}

// at counts the ports still waiting at now, without changing the queue.
func (f *fifo) at(now int64) int {
	live := f.q[f.head:]
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
	p.aging.push(idx, until)
}

// giveCollided returns a port found held outside the allocator, to wait
// until the given time in its own queue.
func (p *pool) giveCollided(idx uint16, until int64) {
	p.leased--
	p.collided.push(idx, until)
}

// expire moves ports whose waiting period has passed to the free list.
func (p *pool) expire(now int64) {
	p.free = p.aging.expire(now, p.free)
	p.free = p.collided.expire(now, p.free)
}

// agingAt counts the ports still aging (either queue) at now, without
// changing the pool.
func (p *pool) agingAt(now int64) int { return p.aging.at(now) + p.collided.at(now) }

// idle reports whether the pool holds nothing that needs remembering.
func (p *pool) idle() bool { return p.leased == 0 && p.aging.empty() && p.collided.empty() }
