package nsexec

import (
	"strings"
	"testing"
)

func FuzzPath(f *testing.F) {
	for _, s := range []string{"", "blue", "/run/netns/blue", "/proc/1/ns/net", "a/b", "..", ".", "x/../y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ns string) {
		p, err := Path(ns)
		switch {
		case err != nil:
			if ns == "" || strings.HasPrefix(ns, "/") {
				t.Fatalf("Path(%q) refused a valid form: %v", ns, err)
			}
		case ns == "":
			if p != "" {
				t.Fatalf("Path(\"\") = %q", p)
			}
		case strings.HasPrefix(ns, "/"):
			if p != ns {
				t.Fatalf("Path(%q) = %q", ns, p)
			}
		default:
			// A name stays one path element under /run/netns.
			if p != "/run/netns/"+ns || strings.Contains(ns, "/") || ns == ".." || ns == "." {
				t.Fatalf("Path(%q) = %q", ns, p)
			}
		}
	})
}
