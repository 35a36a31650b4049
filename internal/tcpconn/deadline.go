package tcpconn

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// lazyDeadline makes deadline updates cheap. fasthttp's server sets three
// deadlines per request (idle, read, write); each is a runtime timer update
// on the descriptor, and together they cost about half a microsecond, as
// much as the rest of a pipelined request. Almost every update moves the
// deadline later, and a later deadline need not reach the timer at once:
// the descriptor keeps the earlier one, and when that fires the operation
// that timed out asks whether the deadline the caller wanted has really
// passed; if not, the descriptor is re-armed with it and the operation
// retried. An update that moves the deadline earlier is applied at once,
// so no timeout ever fires late.
type lazyDeadline struct {
	mu      sync.Mutex
	want    atomic.Int64 // what the caller asked for, Unix ns; 0 means none
	applied atomic.Int64 // what the descriptor has, Unix ns; 0 means none
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	if n := t.UnixNano(); n != 0 {
		return n
	}
	return 1
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// set records t and applies it to the descriptor if it is earlier than
// what the descriptor has.
func (d *lazyDeadline) set(t time.Time, apply func(time.Time) error) error {
	w := unixNano(t)
	d.want.Store(w)
	if a := d.applied.Load(); a != 0 && (w == 0 || w >= a) {
		return nil // the descriptor fires first; expired extends it
	}
	if w == 0 {
		return nil // neither has a deadline
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
		if err := apply(fromUnixNano(w)); err != nil {
			return err
		}
		d.applied.Store(w)
		if d.want.Load() == w {
			return nil
		}
	}
}

// expired is called after an operation failed with err. It reports whether
// err stands: true for anything but a deadline that fired before the
// caller's; for such a deadline it re-arms the descriptor with the caller's
// and reports false, and the operation should be retried.
func (d *lazyDeadline) expired(err error, apply func(time.Time) error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if w := d.want.Load(); w != 0 && time.Now().UnixNano() >= w {
		return true
	}
	return d.applyLocked(apply) != nil
}
