package tiered

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
)

// newClusterNode returns an independent cache (own Cluster client, own bus,
// own L1) of namespace "cluster" on cl, with a healthy bus.
func newClusterNode(t *testing.T, cl *redistest.Cluster) *Cache[Product] {
	t.Helper()
	rdb := cl.Client(t, nil) // closed after the cache: cleanups run last-in first-out
	// A generous OpTimeout: a Cluster client's first call also fetches the
	// slot map, and the test machine may be busy.
	c, err := New[Product](rdb, &Options{Namespace: "cluster", TTL: time.Minute, OpTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := c.Bus().WaitHealthy(ctx); err != nil {
		t.Fatalf("bus never became healthy: %v", err)
	}
	return c
}

// TestCluster: two nodes in one namespace on a real Redis Cluster (three
// masters with a replica each). A key starting with '}' once made every
// write fail there with CROSSSLOT (see l2/keys.go); here it is written,
// read, invalidated across nodes and loaded under the lease like any other.
// Checks use the values returned, not L1 counters: a node may skip L1 for
// its first reads.
func TestCluster(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	a, b := newClusterNode(t, cl), newClusterNode(t, cl)
	ctx := context.Background()
	const key = "}x"

	// get returns the version c reads for key, or 0 for ErrNotFound.
	get := func(t *testing.T, c *Cache[Product], key string) int {
		t.Helper()
		p, err := c.Get(ctx, key)
		if errors.Is(err, ErrNotFound) {
			return 0
		}
		if err != nil {
			t.Fatalf("Get(%q): %v", key, err)
		}
		return p.Version
	}
	// eventually waits, at most 5s, until c reads version want of key.
	eventually := func(t *testing.T, c *Cache[Product], node string, want int) {
		t.Helper()
		waitFor(t, 5*time.Second, fmt.Sprintf("node %s to read version %d of %q", node, want, key), func() bool {
			return get(t, c, key) == want
		})
	}

	// Set on A; both nodes read it (B from Redis: it never saw the key).
	if err := a.Set(ctx, key, Product{Name: key, Version: 1}); err != nil {
		t.Fatalf("Set on A: %v", err)
	}
	for range 3 { // and again, from L1 where it is used
		if v := get(t, a, key); v != 1 {
			t.Fatalf("A reads version %d after its Set, want 1", v)
		}
		if v := get(t, b, key); v != 1 {
			t.Fatalf("B reads version %d after A's Set, want 1", v)
		}
	}
	// The value is under the escaped Redis key of l2's layout.
	raw := cl.Client(t, nil)
	if n, err := raw.Exists(ctx, "cluster:{~}x}").Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS cluster:{~}x} = %d, %v; want 1", n, err)
	}

	// A Delete on A reaches B's L1 over the bus.
	invalidations := b.Stats().Invalidations
	if err := a.Delete(ctx, key); err != nil {
		t.Fatalf("Delete on A: %v", err)
	}
	if v := get(t, a, key); v != 0 {
		t.Fatalf("A reads version %d after its Delete, want none", v)
	}
	eventually(t, b, "B", 0)
	waitFor(t, 5*time.Second, "B to count A's invalidation", func() bool {
		return b.Stats().Invalidations > invalidations
	})

	// A Set on B reaches A.
	if err := b.Set(ctx, key, Product{Name: key, Version: 2}); err != nil {
		t.Fatalf("Set on B: %v", err)
	}
	if v := get(t, b, key); v != 2 {
		t.Fatalf("B reads version %d after its Set, want 2", v)
	}
	eventually(t, a, "A", 2)

	// GetOrLoad on both nodes after a Delete on B: A loads, B finds A's value.
	if err := b.Delete(ctx, key); err != nil {
		t.Fatalf("Delete on B: %v", err)
	}
	eventually(t, a, "A", 0)
	var loads atomic.Int64
	loader := LoaderFunc[Product](func(ctx context.Context, k string) (Product, error) {
		loads.Add(1)
		return Product{Name: k, Version: 3}, nil
	})
	for _, n := range []struct {
		name string
		c    *Cache[Product]
	}{{"A", a}, {"B", b}} {
		p, err := n.c.GetOrLoad(ctx, key, loader)
		if err != nil || p.Version != 3 {
			t.Fatalf("GetOrLoad on %s = %+v, %v; want version 3", n.name, p, err)
		}
	}
	if n := loads.Load(); n != 1 {
		t.Fatalf("loader ran %d times, want 1 (B should find A's value in Redis)", n)
	}

	t.Run("LeaseAcrossNodes", func(t *testing.T) {
		// A cold key loaded by both nodes at once: one takes the lease and
		// loads, the other waits for it. Each node's loader holds the lease
		// until the other node has found it held (bounded), so the two
		// loads overlap on every run.
		const key = "}y"
		var calls atomic.Int64
		leaseWaits := a.Stats().LeaseWaits + b.Stats().LeaseWaits
		loaderFor := func(other *Cache[Product]) Loader[Product] {
			waits := other.Stats().LeaseWaits
			return LoaderFunc[Product](func(ctx context.Context, k string) (Product, error) {
				calls.Add(1)
				deadline := time.Now().Add(5 * time.Second)
				for other.Stats().LeaseWaits == waits && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				return Product{Name: k, Version: 7}, nil
			})
		}
		start := make(chan struct{})
		errs := make(chan error, 2)
		for _, n := range []struct{ c, other *Cache[Product] }{{a, b}, {b, a}} {
			loader := loaderFor(n.other)
			go func() {
				<-start
				p, err := n.c.GetOrLoad(ctx, key, loader)
				if err == nil && p.Version != 7 {
					err = fmt.Errorf("got %+v, want version 7", p)
				}
				errs <- err
			}()
		}
		close(start)
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("GetOrLoad(%q): %v", key, err)
			}
		}
		if n := calls.Load(); n != 1 {
			t.Fatalf("the loader ran %d times across the two nodes, want 1", n)
		}
		if got := a.Stats().LeaseWaits + b.Stats().LeaseWaits - leaseWaits; got != 1 {
			t.Fatalf("lease waits = %d, want 1: the nodes did not meet at the lease", got)
		}
	})

	// GetMany reads keys of every master with one pipeline of GETs (one
	// MGET cannot span slots), leases and fills the misses across masters,
	// and the two nodes load each cold key once between them.
	t.Run("GetMany", func(t *testing.T) {
		for i := range 10 {
			if err := a.Set(ctx, fmt.Sprint("warm", i), Product{ID: i}); err != nil {
				t.Fatal(err)
			}
		}
		db := newBulkDB(0)
		keys := []string{"}w", "~z"}
		for i := range 10 {
			keys = append(keys, fmt.Sprint("warm", i))
		}
		for i := range 30 {
			k := fmt.Sprint("cold", i)
			db.set(k, Product{ID: 100 + i})
			keys = append(keys, k)
		}
		db.set("}w", Product{ID: 7})
		errs := make(chan error, 2)
		for _, c := range []*Cache[Product]{a, b} {
			go func() {
				m, err := c.GetMany(ctx, keys, db)
				if err == nil && len(m) != 41 {
					err = fmt.Errorf("%d values, want 41 (~z does not exist)", len(m))
				}
				errs <- err
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if _, n := db.loaded(); n != 32 {
			t.Fatalf("the nodes loaded %d keys, want each of the 32 cold keys once: %v", n, db.calls)
		}
		m, err := b.GetManyCached(ctx, keys)
		if err != nil || len(m) != 41 || m["}w"].ID != 7 {
			t.Fatalf("GetManyCached: %d values, %v", len(m), err)
		}
	})
}
