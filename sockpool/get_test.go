package sockpool

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A waiter woken by an error that the refill clears before the waiter reads
// it goes back to waiting: Get never returns (nil, nil).
func TestGetErrorClearedBeforeRead(t *testing.T) {
	p := &Pool{
		label:   "test",
		sockets: make(chan *Socket, 1),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		errCh:   make(chan struct{}),
	}
	type res struct {
		s   *Socket
		err error
	}
	got := make(chan res, 1)
	go func() {
		s, err := p.Get(context.Background())
		got <- res{s, err}
	}()
	<-p.kick // the waiter asked for a refill and is waiting
	// Hold the lock across set and clear so the waiter, woken by the
	// closed channel, can only read the error after it is cleared.
	p.mu.Lock()
	p.err = errors.New("refill failed")
	close(p.errCh)
	time.Sleep(20 * time.Millisecond)
	p.err = nil
	p.errCh = make(chan struct{})
	p.mu.Unlock()
	select {
	case r := <-got:
		t.Fatalf("Get returned (%v, %v) while the pool had neither a socket nor an error", r.s, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	want := newSocket(-1, false, 0)
	p.sockets <- want
	select {
	case r := <-got:
		if r.s != want || r.err != nil {
			t.Fatalf("Get: (%v, %v), want the refilled socket", r.s, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Get did not take the refilled socket")
	}
}
