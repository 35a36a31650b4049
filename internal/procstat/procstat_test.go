package procstat

import (
	"os"
	"syscall"
	"testing"
	"time"
)

func TestParseSlabinfo(t *testing.T) {
	const text = `slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
TCP                   66    117   2368   13    8 : tunables    0    0    0 : slabdata      9      9      0
filp                 756    756    192   21    1 : tunables    0    0    0 : slabdata     36     36      0
`
	got, err := parseSlabinfo([]byte(text), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if got["TCP"] != 9*8*4096 || got["filp"] != 36*4096 || len(got) != 2 {
		t.Fatalf("%v", got)
	}
	if _, err := parseSlabinfo([]byte("slabinfo - version: 2.1\n"), 4096); err == nil {
		t.Fatal("no caches, no error")
	}
}

// The live file: the TCP cache grows with open sockets.
func TestSlabsLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("/proc/slabinfo is readable by root only (CI runs as root)")
	}
	s, err := Slabs()
	if err != nil {
		t.Fatal(err)
	}
	if s["TCP"] == 0 && s["filp"] == 0 {
		t.Fatalf("no TCP or filp cache in %d caches", len(s))
	}
}

func TestNetCounter(t *testing.T) {
	for _, c := range [][2]string{{"Tcp", "OutRsts"}, {"TcpExt", "TCPAbortOnData"}} {
		if _, err := NetCounter(c[0], c[1]); err != nil {
			t.Errorf("%s %s: %v", c[0], c[1], err)
		}
	}
	if _, err := NetCounter("Tcp", "NoSuchCounter"); err == nil {
		t.Error("a missing counter read without error")
	}
}

func TestParseMachineTicks(t *testing.T) {
	busy, total, err := parseMachineTicks([]byte("cpu  100 5 50 800 10 3 7 2 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"))
	if err != nil || busy != 100+5+50+3+7+2 || total != busy+800+10 {
		t.Fatalf("busy %v total %v, %v", busy, total, err)
	}
	if _, _, err := parseMachineTicks([]byte("intr 1 2 3\n")); err == nil {
		t.Fatal("a first line that is not cpu was accepted")
	}
	// The live machine's clock moves, and busy is part of it.
	b1, t1, err := MachineTicks()
	if err != nil || b1 > t1 || t1 <= 0 {
		t.Fatalf("busy %v total %v, %v", b1, t1, err)
	}
}

// After a burst of sockets is closed, shrinking gives their slabs back:
// the TCP cache is no bigger than before the burst plus a little.
func TestShrinkSlabs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("/sys/kernel/slab/*/shrink and /proc/slabinfo are root's (CI runs as root)")
	}
	if _, err := ShrinkSlabs(); err != nil {
		t.Fatal(err)
	}
	before, err := Slabs()
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for range 3000 {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	held, _ := Slabs()
	for _, fd := range fds {
		syscall.Close(fd)
	}
	time.Sleep(100 * time.Millisecond) // sockets are freed after an RCU grace period
	if _, err := ShrinkSlabs(); err != nil {
		t.Fatal(err)
	}
	after, _ := Slabs()
	grew := held["TCP"] - before["TCP"]
	if grew < 3000*2000 {
		t.Fatalf("3,000 TCP sockets grew the TCP cache by %d B", grew)
	}
	if left := int64(after["TCP"]) - int64(before["TCP"]); left > int64(grew)/2 {
		t.Fatalf("after closing and shrinking, the TCP cache still holds %d of the %d B it grew", left, grew)
	}
}
