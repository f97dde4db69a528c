// Package mono is the process's monotonic clock as an int64, cheap enough
// for the L1 hit path.
//
// [Now] is time.Since of a base taken at start-up: one monotonic clock read
// (about 35 ns here, against about 70 ns for time.Now, which also reads the
// wall clock). Values are nanoseconds, comparable only within one process,
// and always > 0.
package mono

import "time"

var base = time.Now()

// Now returns the nanoseconds elapsed since the process started, plus one,
// so that zero can mean "never".
func Now() int64 { return int64(time.Since(base)) + 1 }
