package ports

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Range
		ok   bool
	}{
		{"32768\t60999\n", Range{32768, 60999}, true},
		{"1024 65535", Range{1024, 65535}, true},
		{"5 5", Range{5, 5}, true},
		{"", Range{}, false},
		{"100", Range{}, false},
		{"200 100", Range{}, false},
		{"0 100", Range{}, false},
		{"1 70000", Range{}, false},
		{"1 2 3", Range{}, false},
		{"a b", Range{}, false},
	} {
		got, err := parseRange(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseRange(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseReserved(t *testing.T) {
	got, err := parseReserved("8080,9000-9002, 10000\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []Range{{8080, 8080}, {9000, 9002}, {10000, 10000}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got, err := parseReserved("\n"); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v, %v", got, err)
	}
	for _, bad := range []string{"9002-9000", "x", "1-", "-5", "70000"} {
		if _, err := parseReserved(bad); err == nil {
			t.Errorf("parseReserved(%q) accepted", bad)
		}
	}
}

func TestUsablePorts(t *testing.T) {
	got := usablePorts(Range{100, 110}, []Range{{102, 103}, {110, 200}})
	want := []uint16{100, 101, 104, 105, 106, 107, 108, 109}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func FuzzParseReserved(f *testing.F) {
	for _, s := range []string{"", "8080", "1-2,3", "9000-9002, 10000\n", ",,", "65535-65535"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := parseReserved(s)
		if err != nil {
			return
		}
		for _, r := range rs {
			if r.Low == 0 || r.Low > r.High {
				t.Fatalf("parseReserved(%q) returned invalid %v", s, r)
			}
		}
	})
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"32768\t60999\n", "1 1", "0 0", "65535 65535", "5 4", " 10  20 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRange(s)
		if err == nil && (r.Low == 0 || r.Low > r.High) {
			t.Fatalf("parseRange(%q) = %v", s, r)
		}
	})
}

// New reads the namespace's range and reserved ports through env: a fake
// /proc decides which ports the allocator hands out.
func TestSystemRangeRead(t *testing.T) {
	files := map[string]string{
		"/proc/sys/net/ipv4/ip_local_port_range":     "40000\t40009\n",
		"/proc/sys/net/ipv4/ip_local_reserved_ports": "40001-40003,40009\n",
	}
	e := osEnv
	e.readFile = func(name string) ([]byte, error) {
		if v, ok := files[name]; ok {
			return []byte(v), nil
		}
		return nil, os.ErrNotExist
	}
	if !supported {
		t.Skip("ports.New is Linux only")
	}
	a, err := newAllocator(Config{Aging: -1}, e)
	if err != nil {
		t.Fatal(err)
	}
	if a.rng != (Range{40000, 40009}) {
		t.Fatalf("range %v", a.rng)
	}
	if got, want := fmt.Sprint(a.ports), "[40000 40004 40005 40006 40007 40008]"; got != want {
		t.Fatalf("usable ports %s, want %s", got, want)
	}
	files["/proc/sys/net/ipv4/ip_local_port_range"] = "40000"
	if _, err := newAllocator(Config{}, e); err == nil || !strings.Contains(err.Error(), "port range") {
		t.Fatalf("malformed range file: %v", err)
	}
	delete(files, "/proc/sys/net/ipv4/ip_local_reserved_ports")
	files["/proc/sys/net/ipv4/ip_local_port_range"] = "40000 40009"
	if _, err := newAllocator(Config{}, e); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing reserved-ports file: %v", err)
	}
}
