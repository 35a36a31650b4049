// Package leakcheck gives tests the descriptor and goroutine counts they
// compare before and after, and a patient comparison: connections close and
// goroutines exit asynchronously.
package leakcheck

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// FDs is the number of open descriptors of this process (0 outside Linux).
func FDs(t testing.TB) int {
	t.Helper()
	if runtime.GOOS != "linux" {
		return 0
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("reading /proc/self/fd: %v", err)
	}
	return len(ents)
}

// Settle waits up to five seconds for descriptors and goroutines to come
// back to at most fds and goroutines (a negative value skips that count),
// and fails the test with a goroutine dump if they do not.
func Settle(t testing.TB, fds, goroutines int) {
	t.Helper()
	SettleWhen(t, fds, goroutines, nil)
}

// SettleWhen is Settle that also waits for cond (nil: none) to hold; cond
// says what it found, for the failure message.
func SettleWhen(t testing.TB, fds, goroutines int, cond func() (ok bool, found string)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, g := FDs(t), runtime.NumGoroutine()
		ok, found := true, ""
		if cond != nil {
			ok, found = cond()
		}
		if ok && (fds < 0 || f <= fds) && (goroutines < 0 || g <= goroutines) {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("leak: descriptors %d -> %d, goroutines %d -> %d %s\n%s", fds, f, goroutines, g, found, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
