package ports

import (
	"fmt"
	"strconv"
	"strings"
)

// parseRange parses ip_local_port_range: two numbers separated by white
// space.
func parseRange(s string) (Range, error) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return Range{}, fmt.Errorf("port range %q: want two numbers", s)
	}
	lo, err1 := strconv.ParseUint(f[0], 10, 16)
	hi, err2 := strconv.ParseUint(f[1], 10, 16)
	if err1 != nil || err2 != nil || lo == 0 || lo > hi {
		return Range{}, fmt.Errorf("port range %q: want 1 <= low <= high <= 65535", s)
	}
	return Range{uint16(lo), uint16(hi)}, nil
}

// parseReserved parses ip_local_reserved_ports: a comma-separated list of
// ports and low-high ranges, possibly empty.
func parseReserved(s string) ([]Range, error) {
	var out []Range
	for _, item := range strings.Split(strings.TrimSpace(s), ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(item, "-")
		if !isRange {
			hi = lo
		}
		r, err := parseRange(lo + " " + hi)
		if err != nil {
			return nil, fmt.Errorf("reserved ports %q: %w", s, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// usablePorts lists the ports of r that no reserved range covers.
func usablePorts(r Range, reserved []Range) []uint16 {
	out := make([]uint16, 0, int(r.High)-int(r.Low)+1)
	for p := int(r.Low); p <= int(r.High); p++ {
		ok := true
		for _, res := range reserved {
			if p >= int(res.Low) && p <= int(res.High) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, uint16(p))
		}
	}
	return out
}
