package prefork

import "syscall"

// procAttr puts each child in a process group of its own, so that a
// terminal's Ctrl-C reaches the supervisor only (which then stops the
// children in order, instead of restarting children that exit on their
// own), and has the kernel send SIGTERM to a child whose parent dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
