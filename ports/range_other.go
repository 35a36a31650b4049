//go:build !linux

package ports

const supported = false
