//go:build !linux

package prefork

import "syscall"

// procAttr: outside Linux children share the supervisor's process group and
// are not told when it dies.
func procAttr() *syscall.SysProcAttr { return nil }
