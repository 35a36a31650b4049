//go:build !linux

package ports

const supported = false

func systemRange() (Range, []Range, error) { return Range{49152, 65535}, nil, nil }
