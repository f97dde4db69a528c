//go:build !linux

package main

import "syscall"

// nodeSysProcAttr returns nil: outside Linux there is no parent-death
// signal, and a node relies on EOF of its standard input to exit when the
// parent goes.
func nodeSysProcAttr() *syscall.SysProcAttr { return nil }
