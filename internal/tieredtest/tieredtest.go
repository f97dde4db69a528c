// Package tieredtest makes ready tiered caches for the tests of the
// packages built on package tiered (httpcache, otelcache). Package
// tiered's own tests cannot use it: it imports tiered.
package tieredtest

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/tiered"
)

// ReadyTimeout bounds the wait for a new cache to be ready. It is long
// because a loaded test machine (the race detector, parallel packages) can
// take seconds to confirm a subscription; a healthy one takes
// milliseconds, so it costs nothing when all is well.
const ReadyTimeout = 30 * time.Second

// Cache returns a cache made by tiered.New over rdb with opts, ready
// (WaitReady returned: it uses both tiers) and closed when tb ends. It fails tb if
// New fails or the cache is not ready within [ReadyTimeout].
func Cache[V any](tb testing.TB, rdb redis.UniversalClient, opts *tiered.Options) *tiered.Cache[V] {
	tb.Helper()
	c, err := tiered.New[V](rdb, opts)
	return Ready(tb, c, err)
}

// Ready takes what a cache constructor returned (tiered.New, or one that
// wraps it, such as httpcache.NewCache): it fails tb on err, closes c when
// tb ends, waits up to [ReadyTimeout] for c to be ready, and returns c.
// Close runs before the cleanups registered earlier, such as closing the
// Redis client the cache uses.
func Ready[V any](tb testing.TB, c *tiered.Cache[V], err error) *tiered.Cache[V] {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		tb.Fatalf("cache not ready: %v", err)
	}
	return c
}
