// Package poll waits in tests for a condition that something running
// concurrently makes true.
package poll

import (
	"testing"
	"time"
)

// Until calls cond every interval until it returns true, and fails tb,
// naming what it waited for, once timeout has passed.
func Until(tb testing.TB, timeout, interval time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(interval)
	}
}
