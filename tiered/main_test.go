package tiered

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(childNodeEnv); addr != "" {
		// This process is a fleet node started by a test: see process_test.go.
		os.Exit(runChildNode(addr))
	}
	// Most test clients leave ContextTimeoutEnabled off, and a cache with
	// no Logger warns about it on slog.Default (TestWarningsWithoutLogger).
	slog.SetDefault(slog.New(slog.DiscardHandler))
	redistest.Main(m)
}

// readyTimeout bounds a test's wait for a new node to be ready. A sharded
// bus subscribes to 16,384 channels, which takes seconds under the race
// detector on a loaded 2-core machine.
const readyTimeout = 30 * time.Second

// Product is the value type of most tests.
type Product struct {
	ID      int    `json:"id"`
	Name    string `json:"name"`
	Version int    `json:"version"`
}

// node is one independent cache: its own client, bus and L1.
func newNode[V any](t *testing.T, addr string, opts Options) (*Cache[V], *redis.Client) {
	t.Helper()
	rdb := redistest.Client(t, addr) // closed after the cache: cleanups run last-in first-out
	if opts.Namespace == "" {
		opts.Namespace = "test"
	}
	if opts.TTL == 0 {
		opts.TTL = time.Minute
	}
	if opts.MaxStaleness == 0 && opts.Bus == nil {
		// These tests are about one node's flights, fills and errors, not
		// the staleness bound (faults_test.go and fleet_test.go are). On a
		// loaded test machine the bus's proof can lapse, and then flights
		// are joinable for MaxStaleness only (flightsFor), which would
		// split the single flight some of these tests count.
		opts.MaxStaleness = time.Minute
	}
	c, err := New[V](rdb, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("bus never became healthy: %v", err)
	}
	return c, rdb
}

// countingDB is a fake database that counts loads per key.
type countingDB struct {
	rows  map[string]Product
	calls atomic.Int64
}

func (db *countingDB) Load(ctx context.Context, key string) (Product, error) {
	db.calls.Add(1)
	p, ok := db.rows[key]
	if !ok {
		return Product{}, ErrNotFound
	}
	return p, nil
}

// inL1 reports whether key is in c's L1, after ristretto applied every
// buffered write.
func inL1[V any](c *Cache[V]) func(key string) (V, bool) {
	return func(key string) (V, bool) {
		c.l1.Wait()
		e, ok := c.l1.Get(key)
		if !ok {
			var zero V
			return zero, false
		}
		return e.v, true
	}
}

// cmdCounter counts the GET commands a client sends.
// cmdCounter counts the GETs of cached values (keys with a hash tag), not
// the cache's own bookkeeping such as the run marker read by a server check.
type cmdCounter struct{ get atomic.Int64 }

func (h *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); cmd.Name() == "get" && len(args) == 2 && strings.Contains(fmt.Sprint(args[1]), "{") {
			h.get.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
