// Package confcheck holds the one rule every connopt Config follows for
// numbers (documented on package sockopt): zero means the documented
// default, and a negative value is an error at construction unless the field
// documents that negative turns its feature off.
package confcheck

import (
	"errors"
	"fmt"
	"time"
)

// ErrInvalid is sockopt.ErrInvalidConfig and every package's
// ErrInvalidConfig.
var ErrInvalid = errors.New("connopt: invalid Config")

// ErrUnsupported is sockopt.ErrUnsupported and every package's
// ErrUnsupported: it matches errors.ErrUnsupported.
var ErrUnsupported = fmt.Errorf("connopt: %w on this platform", errors.ErrUnsupported)

// Field is a Config field that must not be negative.
type Field struct {
	Name  string
	Value int64
}

// Int and Duration make a Field.
func Int(name string, v int) Field                { return Field{name, int64(v)} }
func Duration(name string, d time.Duration) Field { return Field{name, int64(d)} }

// NonNegative returns an error wrapping ErrInvalid that names the first
// negative field, or nil.
func NonNegative(fields ...Field) error {
	for _, f := range fields {
		if f.Value < 0 {
			return Invalid("%s is negative (%d)", f.Name, f.Value)
		}
	}
	return nil
}

// Invalid returns an error wrapping ErrInvalid with the reason given.
func Invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}
