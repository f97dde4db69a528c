//go:build !linux

package main

import "syscall"

// childProcAttr returns nil outside Linux, which has no parent-death
// signal: the instances stay in the terminal's process group, so a Ctrl-C
// reaches them as well as the demo.
func childProcAttr() *syscall.SysProcAttr { return nil }
