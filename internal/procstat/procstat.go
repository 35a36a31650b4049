// Package procstat reads a process's figures from /proc, for connopt's
// tests and benchmark harnesses: resident memory and CPU time, measured the
// same way everywhere.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

func path(pid int, file string) string {
	if pid == 0 {
		return "/proc/self/" + file
	}
	return fmt.Sprintf("/proc/%d/%s", pid, file)
}

// StatusBytes returns a memory field of /proc/PID/status ("VmRSS",
// "VmHWM", …) in bytes; pid 0 is this process.
func StatusBytes(pid int, field string) (uint64, error) {
	b, err := os.ReadFile(path(pid, "status"))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			kib, err := strconv.ParseUint(f[0], 10, 64)
			return kib << 10, err
		}
	}
	return 0, fmt.Errorf("%s: no %s field", path(pid, "status"), field)
}

// RSS is this process's resident set size in bytes, 0 if unknown.
func RSS() uint64 {
	n, _ := StatusBytes(0, "VmRSS")
	return n
}

// CPUTicks is utime+stime of /proc/PID/stat, in clock ticks.
func CPUTicks(pid int) (float64, error) {
	b, err := os.ReadFile(path(pid, "stat"))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces and parentheses: fields start
	// after the last ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: %d fields", path(pid, "stat"), len(f))
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return u + s, nil
}

// NetCounter returns a counter of the calling thread's network namespace
// from /proc/thread-self/net/snmp or netstat: group "Tcp" or "TcpExt" (and
// the others those files have), name "OutRsts", "TCPAbortOnData", …. Call
// it inside nsexec.Do to read another namespace's.
func NetCounter(group, name string) (int64, error) {
	for _, file := range []string{"snmp", "netstat"} {
		b, err := os.ReadFile("/proc/thread-self/net/" + file)
		if err != nil {
			return 0, err
		}
		var names []string
		for line := range strings.SplitSeq(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != group+":" {
				continue
			}
			if names == nil {
				names = f
				continue
			}
			for i, n := range names {
				if n == name && i < len(f) {
					return strconv.ParseInt(f[i], 10, 64)
				}
			}
			names = nil
		}
	}
	return 0, fmt.Errorf("no %s %s counter in /proc/thread-self/net", group, name)
}

// Slabs returns the kernel memory in use in each slab cache of
// /proc/slabinfo (root only): active objects × object size. What a cache
// holds from the page allocator (slabs × pages) is larger and depends on
// history: freed objects stay in their slabs, so after a bigger run the
// same sockets fit in slabs the cache already has, and growth measured
// that way shows less than the sockets use.
func Slabs() (map[string]uint64, error) {
	b, err := os.ReadFile("/proc/slabinfo")
	if err != nil {
		return nil, err
	}
	return parseSlabinfo(b)
}

func parseSlabinfo(b []byte) (map[string]uint64, error) {
	caches := map[string]uint64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		// name active_objs num_objs objsize objperslab pagesperslab :
		// tunables l b s : slabdata active_slabs num_slabs sharedavail
		f := strings.Fields(line)
		if len(f) < 16 || f[6] != ":" || f[11] != ":" {
			continue
		}
		active, err1 := strconv.ParseUint(f[1], 10, 64)
		size, err2 := strconv.ParseUint(f[3], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("slabinfo line %q", line)
		}
		caches[f[0]] += active * size
	}
	if len(caches) == 0 {
		return nil, fmt.Errorf("slabinfo: no caches read")
	}
	return caches, nil
}

// MachineTicks returns the busy and total CPU time of the machine, all
// CPUs, from the first line of /proc/stat, in clock ticks: busy is user,
// nice, system, irq, softirq and steal; total adds idle and iowait. The
// busy columns are sampled at the timer tick (work that wakes and sleeps
// between ticks is missed); idle and iowait are measured, so wall time
// times CPUs minus idle is the precise busy time.
func MachineTicks() (busy, total float64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	return parseMachineTicks(b)
}

func parseMachineTicks(b []byte) (busy, total float64, err error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: first line %q", line)
	}
	var v [8]float64 // user nice system idle iowait irq softirq steal
	for i := range v {
		if v[i], err = strconv.ParseFloat(f[i+1], 64); err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
	}
	busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	return busy, busy + v[3] + v[4], nil
}
