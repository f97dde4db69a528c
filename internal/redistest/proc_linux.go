package redistest

import "syscall"

// DieWithParent returns process attributes that make the kernel kill a
// child (a redis-server, a test's node process) when the process that
// started it dies, so a killed test run leaves no orphan.
func DieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
