package listener

import (
	"errors"
	"net"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
)

// Accept's back-off, with the OS calls stood in for: a run of EMFILE,
// ENFILE, ENOBUFS and ENOMEM sleeps 5 ms doubling up to MaxAcceptBackoff,
// counts each error and the time slept, then returns the connection that
// finally comes; another error is returned at once.
func TestAcceptBackoffSequence(t *testing.T) {
	ln := listenT(t, Config{MaxAcceptBackoff: 50 * time.Millisecond})
	errs := []error{syscall.EMFILE, syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EMFILE, syscall.EMFILE}
	want := &net.TCPConn{}
	ln.acceptTCP = func() (*net.TCPConn, error) {
		if len(errs) == 0 {
			return want, nil
		}
		err := errs[0]
		errs = errs[1:]
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", err)}
	}
	var slept []time.Duration
	ln.sleep = func(d time.Duration, _ <-chan struct{}) { slept = append(slept, d) }

	c, err := ln.Accept()
	if err != nil || c != want {
		t.Fatalf("Accept: %v, %v", c, err)
	}
	ms := time.Millisecond
	if w := []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 50 * ms, 50 * ms, 50 * ms}; !slices.Equal(slept, w) {
		t.Fatalf("slept %v, want %v", slept, w)
	}
	s := ln.Metrics().Snapshot()
	if s.AcceptErrors["emfile"] != 4 || s.AcceptErrors["enfile"] != 1 || s.AcceptErrors["enobufs"] != 1 || s.AcceptErrors["enomem"] != 1 {
		t.Fatalf("accept errors %v", s.AcceptErrors)
	}
	if s.AcceptBackoff != 225*ms || s.Accepted != 1 {
		t.Fatalf("backoff %v, accepted %d", s.AcceptBackoff, s.Accepted)
	}

	// A successful accept resets the back-off.
	errs = []error{syscall.EMFILE}
	slept = nil
	if _, err := ln.Accept(); err != nil || !slices.Equal(slept, []time.Duration{5 * ms}) {
		t.Fatalf("after a success: slept %v, %v", slept, err)
	}

	// Other errors are the caller's, at once and unchanged.
	other := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EPROTO)}
	ln.acceptTCP = func() (*net.TCPConn, error) { return nil, other }
	slept = nil
	if _, err := ln.Accept(); err != other || len(slept) != 0 {
		t.Fatalf("EPROTO: %v, slept %v", err, slept)
	}
	if got := ln.Metrics().Snapshot().AcceptErrors["other"]; got != 1 {
		t.Fatalf("other errors %d", got)
	}
}

// Close during a back-off ends the sleep, and the next accept returns the
// closed listener's error.
func TestAcceptBackoffEndsOnClose(t *testing.T) {
	ln := listenT(t, Config{})
	real := ln.acceptTCP
	ln.acceptTCP = func() (*net.TCPConn, error) {
		select {
		case <-ln.done:
			return real()
		default:
			return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
		}
	}
	sleeping := make(chan struct{}, 1)
	ln.sleep = func(d time.Duration, done <-chan struct{}) {
		select {
		case sleeping <- struct{}{}:
		default:
		}
		<-done // a sleep as long as it takes: only Close ends it
	}
	errc := make(chan error, 1)
	go func() { _, err := ln.Accept(); errc <- err }()
	<-sleeping
	ln.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}
