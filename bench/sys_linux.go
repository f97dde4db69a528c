package main

import (
	"syscall"
	"time"
)

// pause blocks the calling goroutine's thread for about d (a nanosleep
// system call: Go's timers wait in epoll_wait, which has millisecond
// resolution, so time.Sleep of 50 µs lasts a millisecond here). The CPU is
// free meanwhile for redis-server and the libraries' goroutines, which a
// busy wait would take it from on a 2-core machine.
func pause(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil)
}

// processCPU returns the CPU time this process has used, user and system.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
