package redistest

import "syscall"

// dieWithParent makes the kernel kill the server when the process that
// started it dies, so a killed test run leaves no orphan redis-server.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
