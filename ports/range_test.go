package ports

import (
	"slices"
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
