package ports

import (
	"os"
	"time"
)

// env is what an Allocator asks of the operating system, behind funcs so
// that tests answer instead (as cloudflare/tableflip's env does): the clock
// aging runs on, and the files the namespace's port range is read from.
type env struct {
	// now is monotonic nanoseconds since some fixed point.
	now func() int64
	// readFile reads a file under /proc.
	readFile func(name string) ([]byte, error)
}

var processStart = time.Now()

// osEnv is the real one: the monotonic clock and /proc.
var osEnv = env{
	now:      func() int64 { return int64(time.Since(processStart)) },
	readFile: os.ReadFile,
}

// systemRange reads the calling thread's network namespace's ephemeral
// port range and reserved ports.
func (e env) systemRange() (Range, []Range, error) {
	b, err := e.readFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return Range{}, nil, err
	}
	r, err := parseRange(string(b))
	if err != nil {
		return Range{}, nil, err
	}
	b, err = e.readFile("/proc/sys/net/ipv4/ip_local_reserved_ports")
	if err != nil {
		return Range{}, nil, err
	}
	reserved, err := parseReserved(string(b))
	return r, reserved, err
}
