package ports

import "os"

const supported = true

// systemRange reads the current network namespace's ephemeral port range
// and reserved ports.
func systemRange() (Range, []Range, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return Range{}, nil, err
	}
	r, err := parseRange(string(b))
	if err != nil {
		return Range{}, nil, err
	}
	b, err = os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports")
	if err != nil {
		return Range{}, nil, err
	}
	reserved, err := parseReserved(string(b))
	return r, reserved, err
}
