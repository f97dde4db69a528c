package otelcache_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if a test leaves a cache's or bus's goroutines
// running (the core's internal/leakcheck is internal to its module).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
