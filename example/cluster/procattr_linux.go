package main

import "syscall"

// nodeSysProcAttr puts a node in its own process group, so that a Ctrl-C in
// the terminal reaches only the parent, which then stops the nodes in order,
// and has the kernel SIGKILL the node if the parent dies first.
//
// Pdeathsig fires when the OS thread that started the child exits, not the
// process; the Go runtime does not end its threads while the process runs
// (none of ours is locked with runtime.LockOSThread). The node also exits on
// EOF of its standard input, which covers every other way the parent can go.
func nodeSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
