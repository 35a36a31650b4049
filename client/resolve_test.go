package client

import (
	"context"
	"testing"
)

// FuzzResolve feeds arbitrary addresses to the resolver of a dialer that
// works in another namespace, so that no name is ever looked up: literals
// resolve to a non-zero port, anything else is refused with an error.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"127.0.0.1:80", "[::1]:443", "[fe80::1%eth0]:8080", "localhost:80", "1.2.3.4", ":80", "1.2.3.4:0", "1.2.3.4:99999", "[::ffff:1.2.3.4]:5"} {
		f.Add("tcp", s)
	}
	d := &Dialer{cfg: Config{Namespace: "fuzz"}}
	f.Fuzz(func(t *testing.T, network, addr string) {
		aps, err := d.resolve(context.Background(), network, addr)
		if err != nil {
			return
		}
		if len(aps) != 1 {
			t.Fatalf("resolve(%q, %q) = %v, want one literal", network, addr, aps)
		}
		if ap := aps[0]; !ap.IsValid() || ap.Port() == 0 || ap.Addr().Is4In6() {
			t.Fatalf("resolve(%q, %q) = %v", network, addr, ap)
		}
	})
}
