//go:build !linux

package rawsock

import "syscall"

// ApplyListener reports ErrUnsupported: outside Linux connopt leaves socket
// options to the Go runtime.
func ApplyListener(fd int, o ListenerOptions) error { return ErrUnsupported }

// ReadOptions reports ErrUnsupported outside Linux.
func ReadOptions(rc syscall.RawConn) (Options, error) { return Options{}, ErrUnsupported }

// SetListenBacklog reports ErrUnsupported outside Linux.
func SetListenBacklog(rc syscall.RawConn, backlog int) error { return ErrUnsupported }
