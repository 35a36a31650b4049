package main

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel kill a worker if connscale itself dies, so
// an interrupted run leaves no process behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
