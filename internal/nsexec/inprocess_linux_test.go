package nsexec

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"
)

// The main goroutine stays on the main thread (tid = pid), so TestMain can
// move the main thread itself: the case /proc/self/ns/net (the main
// thread's) cannot tell apart from "this thread is at home".
func init() { runtime.LockOSThread() }

// mainThreadMoved is what InProcessNamespace said on the main thread moved
// into another namespace, and from another goroutine meanwhile; skipped
// says why it was not tried.
var mainThreadMoved struct {
	onMain, elsewhere bool
	err               error
	skipped           string
}

func TestMain(m *testing.M) {
	moveMainThread()
	os.Exit(m.Run())
}

func moveMainThread() {
	r := &mainThreadMoved
	if _, err := exec.LookPath("ip"); os.Geteuid() != 0 || err != nil {
		r.skipped = "needs root and iproute2 (CI has both)"
		return
	}
	name := fmt.Sprintf("connopt-nsexec-%d", os.Getpid())
	if r.err = Create(name, nil); r.err != nil {
		return
	}
	defer Delete(name)
	h, err := Open(name)
	if r.err = err; err != nil {
		return
	}
	defer h.Close()
	leave, err := Enter(h) // the main goroutine, on the main thread
	if r.err = err; err != nil {
		return
	}
	r.onMain, r.err = InProcessNamespace()
	done := make(chan struct{})
	go func() { // an unlocked goroutine: any thread but this one
		defer close(done)
		in, err := InProcessNamespace()
		r.elsewhere = in
		if r.err == nil {
			r.err = err
		}
	}()
	<-done
	if err := leave(); err != nil && r.err == nil {
		r.err = err
	}
}

func TestInProcessNamespace(t *testing.T) {
	if in, err := InProcessNamespace(); err != nil || !in {
		t.Fatalf("a test goroutine: %v, %v; want true", in, err)
	}
	r := mainThreadMoved
	if r.skipped != "" {
		t.Skip(r.skipped)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.onMain {
		t.Error("the main thread, moved into another namespace, said it is in the process's")
	}
	if !r.elsewhere {
		t.Error("another goroutine, while the main thread was away, said it is not in the process's namespace")
	}
}
