package otelcache_test

import (
	"testing"

	"github.com/tieredcache/tiered/internal/leakcheck"
)

// TestMain fails the run if a test leaves a cache's or bus's goroutines
// running. The core's internal packages are importable here: Go's internal
// rule goes by import path, and this module's path is under the core's.
func TestMain(m *testing.M) { leakcheck.Main(m) }
