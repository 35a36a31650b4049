package tcpconn

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// epoch is the origin of the deadlines kept below. They are stored as
// nanoseconds since epoch computed with Time.Sub, which uses the monotonic
// clock when both times carry it (what time.Now().Add returns) and
// saturates instead of overflowing: a wall-clock step does not move a
// deadline, and year 9999 stays in the future (UnixNano overflows after
// 2262). The runtime converts a deadline the same way when it is set.
var epoch = time.Now()

func since(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	if n := int64(t.Sub(epoch)); n != 0 {
		return n
	}
	return -1 // 0 means "no deadline"; epoch itself is long past
}

func at(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return epoch.Add(time.Duration(n))
}

// lazyDeadline makes deadline updates cheap. fasthttp's server sets three
// deadlines per request (idle, read, write); each is a runtime timer update
// on the descriptor, and together they cost about half a microsecond, as
// much as the rest of a pipelined request. Almost every update moves the
// deadline later, and a later deadline need not reach the timer at once:
// the descriptor keeps the earlier one, and when that fires, Read or Write
// (which lose nothing when they time out: no byte was taken that was not
// reported) ask whether the deadline the caller wanted has passed; if not,
// the descriptor is re-armed and the call goes on.
//
// Everything else is applied at once: a deadline earlier than the
// descriptor's (so no timeout fires late), clearing a deadline (net/http
// sets a past deadline and then clears it around every Hijack; a cleared
// deadline must not fire), and every update while a bulk copy runs.
// ReadFrom and WriteTo (sendfile, splice, or a 32 KiB copy buffer) may have
// taken bytes from their source that they had not written when a deadline
// fired, and their deadline errors may come from the other end of the
// copy, so they cannot be retried: they start with the wanted deadline on
// the descriptor (sync) and any update while they run goes straight
// through (bulk).
type lazyDeadline struct {
	mu      sync.Mutex
	want    atomic.Int64 // what the caller asked for, see since; 0 means none
	applied atomic.Int64 // what the descriptor has
	bulk    atomic.Int32 // bulk copies running
}

// set records t and applies it to the descriptor unless the descriptor
// already has an earlier deadline that will fire first.
func (d *lazyDeadline) set(t time.Time, apply func(time.Time) error) error {
	w := since(t)
	d.want.Store(w)
	if d.bulk.Load() == 0 {
		a := d.applied.Load()
		if w == a || w != 0 && a != 0 && w > a {
			return nil
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.applyLocked(apply)
}

// applyLocked sets the wanted deadline on the descriptor, again if the want
// changed meanwhile, so a concurrent set is never lost.
func (d *lazyDeadline) applyLocked(apply func(time.Time) error) error {
	for {
		w := d.want.Load()
		if err := apply(at(w)); err != nil {
			return err
		}
		d.applied.Store(w)
		if d.want.Load() == w {
			return nil
		}
	}
}

// retry is called after a Read or Write on the descriptor failed with err.
// It reports whether the call should be made again: only when err is a
// deadline that fired before the caller's, in which case the descriptor now
// has the caller's deadline.
func (d *lazyDeadline) retry(err error, apply func(time.Time) error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if w := d.want.Load(); w != 0 && int64(time.Since(epoch)) >= w {
		return false
	}
	return d.applyLocked(apply) == nil
}

// startBulk puts the wanted deadline on the descriptor and makes every set
// eager until endBulk. The order (bulk raised, then want read; want stored,
// then bulk read in set) means a concurrent set is seen by one side or the
// other.
func (d *lazyDeadline) startBulk(apply func(time.Time) error) {
	d.bulk.Add(1)
	if d.applied.Load() == d.want.Load() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.applyLocked(apply) // an error (closed) is the copy's own error too
}

func (d *lazyDeadline) endBulk() { d.bulk.Add(-1) }
