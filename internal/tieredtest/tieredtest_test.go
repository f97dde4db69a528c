package tieredtest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/leakcheck"
	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/internal/tieredtest"
	"github.com/tieredcache/tiered/tiered"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// TestCache: the cache is ready when Cache returns, and closed when the
// test that made it ends.
func TestCache(t *testing.T) {
	rdb := redistest.Client(t, redistest.Mini(t).Addr)
	ctx := context.Background()
	var c *tiered.Cache[string]
	t.Run("use", func(t *testing.T) {
		c = tieredtest.Cache[string](t, rdb, &tiered.Options{Namespace: "tt", TTL: time.Minute})
		if err := c.Set(ctx, "k", "v"); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Get(ctx, "k"); err != nil || v != "v" {
			t.Fatalf("Get = %q, %v; want v", v, err)
		}
	})
	if _, err := c.Get(ctx, "k"); !errors.Is(err, tiered.ErrClosed) {
		t.Fatalf("Get after the test = %v; want ErrClosed", err)
	}
}
