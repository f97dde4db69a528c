//go:build !linux

package redistest

import "syscall"

// DieWithParent returns nil: this OS has no parent-death signal.
func DieWithParent() *syscall.SysProcAttr { return nil }
