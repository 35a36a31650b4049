// Package confcheck holds the one rule every connopt Config follows for
// numbers: zero means the documented default, and a negative value is an
// error at construction unless the field documents that negative turns its
// feature off (listener.Config.DeferAccept, ports.Config.Aging).
package confcheck

import (
	"fmt"
	"time"
)

// Field is a Config field that must not be negative.
type Field struct {
	Name  string
	Value int64
}

// Int and Duration make a Field.
func Int(name string, v int) Field                { return Field{name, int64(v)} }
func Duration(name string, d time.Duration) Field { return Field{name, int64(d)} }

// NonNegative returns an error wrapping invalid that names the first
// negative field, or nil.
func NonNegative(invalid error, fields ...Field) error {
	for _, f := range fields {
		if f.Value < 0 {
			return fmt.Errorf("%w: %s is negative (%d)", invalid, f.Name, f.Value)
		}
	}
	return nil
}
