//go:build !linux

package main

import "time"

// pause blocks for about d; see sys_linux.go. Elsewhere time.Sleep.
func pause(d time.Duration) { time.Sleep(d) }

// processCPU is not measured elsewhere than on Linux.
func processCPU() (time.Duration, bool) { return 0, false }
