// Package leakcheck fails a test binary that ends with goroutines it started
// still running. Call it from TestMain:
//
//	func TestMain(m *testing.M) { leakcheck.Main(m) }
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

// Main runs the tests, then waits up to five seconds for every goroutine that
// is not part of the runtime or the testing framework to exit. It reports the
// stacks of those that remain and exits non-zero.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := wait(5 * time.Second); len(leaked) > 0 {
			fmt.Fprintf(os.Stderr, "leakcheck: %d goroutine(s) still running after the tests:\n\n%s\n",
				len(leaked), strings.Join(leaked, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// wait returns the stacks of goroutines still running after d, or nil.
func wait(d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		leaked := interesting()
		if len(leaked) == 0 || time.Now().After(deadline) {
			return leaked
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func interesting() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if ignored(g) {
			continue
		}
		out = append(out, g)
	}
	sort.Strings(out)
	return out
}

// markers name the code whose goroutines we are responsible for: ours and
// those of the libraries we start (ristretto's workers, go-redis pub/sub and
// pools, miniredis servers).
var markers = []string{"tieredcache/tiered", "ristretto", "go-redis", "miniredis"}

func ignored(stack string) bool {
	if strings.TrimSpace(stack) == "" || strings.Contains(stack, "leakcheck.interesting(") {
		return true
	}
	for _, m := range markers {
		if strings.Contains(stack, m) {
			return false
		}
	}
	return true
}
