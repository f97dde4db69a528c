package redistest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/leakcheck"
)

// Backend is a Redis server owned by one test: a miniredis, or a real
// redis-server started by Start.
type Backend struct {
	Name string
	Addr string
	Mini *miniredis.Miniredis // nil for a real redis-server
	Stop func()               // stops the server; idempotent
}

// Backends returns a fresh miniredis and, when redis-server is available
// (required with REQUIRE_REDIS=1), a fresh real server. Both stop when tb
// ends.
func Backends(tb testing.TB) []Backend {
	tb.Helper()
	bs := []Backend{Mini(tb)}
	if Available() || required() {
		s := Start(tb)
		bs = append(bs, Backend{Name: "redis-server", Addr: s.Addr, Stop: s.Stop})
	}
	return bs
}

// Mini returns a fresh miniredis that stops when tb ends.
func Mini(tb testing.TB) Backend {
	tb.Helper()
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(mr.Close)
	return Backend{Name: "miniredis", Addr: mr.Addr(), Mini: mr, Stop: mr.Close}
}

// Client returns a client of addr that fails fast (no retries, short dial
// timeout), closed when tb ends.
func Client(tb testing.TB, addr string) *redis.Client {
	tb.Helper()
	c := redis.NewClient(failFast(addr))
	tb.Cleanup(func() { c.Close() })
	return c
}

// failFast returns client options for addr without retries and with a short
// dial timeout, so that a test sees a stopped or cut server at once.
func failFast(addr string) *redis.Options {
	return &redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond}
}

// RefusedAddr returns a loopback address where nothing listens: a port
// that was free a moment ago, so connections to it are refused.
func RefusedAddr(tb testing.TB) string {
	tb.Helper()
	port, err := FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// QuietLogs silences go-redis's logger: tests stop servers and cut
// connections on purpose, and go-redis would log every failed dial.
func QuietLogs() { redis.SetLogger(quietLogger{}) }

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// Main is the TestMain of a package whose tests talk to Redis servers they
// start, stop and cut: it silences go-redis (QuietLogs), runs the tests, and
// fails the run if a test leaves a goroutine behind (leakcheck.Main). It
// does not return.
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
func Main(m *testing.M) {
	QuietLogs()
	leakcheck.Main(m)
}

// Each runs f as a subtest against every server of Backends, in parallel
// subtests when parallel is true.
func Each(t *testing.T, parallel bool, f func(t *testing.T, b Backend)) {
	t.Helper()
	for _, b := range Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			if parallel {
				t.Parallel()
			}
			f(t, b)
		})
	}
}
