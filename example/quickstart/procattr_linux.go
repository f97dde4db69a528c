package main

import "syscall"

// childProcAttr puts an instance in a process group of its own, so that a
// Ctrl-C in the terminal reaches only the demo, which then stops the
// instances in order, and has the kernel SIGKILL the instance if the demo
// dies first (Pdeathsig fires when the thread that started the child
// exits; the Go runtime does not end its threads while the process runs).
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
