package main

import "time"

// How the workloads print their figures: durations as float milliseconds
// or microseconds, targets as met or MISSED.

// msf returns d in milliseconds.
func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// usf returns d in microseconds.
func usf(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// verdict names whether a target was met.
func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}
