package reliability

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Every Go snippet of the README is made of lines of an Example function
// (example_test.go files, compiled and run by go test), so no snippet can
// drift from the API.
func TestReadmeSnippetsAreExamples(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("../*/example_test.go")
	more, _ := filepath.Glob("../examples/*/example_test.go") // examples/fiber: its own module
	files = append(files, more...)
	if err != nil || len(files) == 0 {
		t.Fatalf("no example files: %v", err)
	}
	examples := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			examples[norm(line)] = true
		}
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	if len(blocks) < 5 {
		t.Fatalf("%d Go snippets in the README", len(blocks))
	}
	for _, b := range blocks {
		for _, line := range strings.Split(b[1], "\n") {
			if l := norm(line); l != "" && !examples[l] {
				t.Errorf("README line not in any example_test.go: %q", l)
			}
		}
	}
}

// norm drops indentation and gofmt's alignment.
func norm(line string) string { return strings.Join(strings.Fields(line), " ") }
