package tiered

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
)

// TestStatsCountReads: Stats count reads, one per caller, whether it led
// its key's flight or joined another's, so L1Hits+L2Hits+Misses is the
// number of reads and the hit ratio is one division. Before, L2Hits and
// Misses counted flights: 20 callers sharing one load counted 1 miss.
func TestStatsCountReads(t *testing.T) {
	redistest.Each(t, true, func(t *testing.T, be redistest.Backend) {
		a, _ := newNode[Product](t, be.Addr, Options{})
		b, _ := newNode[Product](t, be.Addr, Options{})
		ctx := context.Background()
		const callers = 20
		// all runs callers concurrent reads of key through read, and
		// returns the change of c's Stats.
		all := func(c *Cache[Product], read func() error) Stats {
			before := c.Stats()
			var wg sync.WaitGroup
			for range callers {
				wg.Go(func() {
					if err := read(); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			after := c.Stats()
			return Stats{
				L1Hits: after.L1Hits - before.L1Hits, L2Hits: after.L2Hits - before.L2Hits,
				Misses: after.Misses - before.Misses, NegativeHits: after.NegativeHits - before.NegativeHits,
				Loads: after.Loads - before.Loads,
			}
		}
		slow := LoaderFunc[Product](func(context.Context, string) (Product, error) {
			time.Sleep(100 * time.Millisecond) // every caller joins the one flight
			return Product{Name: "k", Version: 1}, nil
		})
		for _, tc := range []struct {
			name           string
			c              *Cache[Product]
			read           func() error
			loads          uint64
			answeredBy     func(Stats) uint64 // the counter the reads go to
			answeredByName string
		}{
			{"cold: one load answers every caller", a, func() error { _, err := a.GetOrLoad(ctx, "k", slow); return err },
				1, func(s Stats) uint64 { return s.Misses }, "Misses"},
			{"in L1", a, func() error { _, err := a.Get(ctx, "k"); return err },
				0, func(s Stats) uint64 { return s.L1Hits }, "L1Hits"},
			{"in Redis, not in B's L1", b, func() error { _, err := b.GetOrLoad(ctx, "k", slow); return err },
				0, func(s Stats) uint64 { return s.L2Hits }, "L2Hits"},
		} {
			got := all(tc.c, tc.read)
			if got.L1Hits+got.L2Hits+got.Misses != callers {
				t.Errorf("%s: L1Hits %d + L2Hits %d + Misses %d != %d reads", tc.name, got.L1Hits, got.L2Hits, got.Misses, callers)
			}
			// A caller that came after the flight filled L1 is an L1 hit.
			if n := tc.answeredBy(got); got.Loads != tc.loads || n == 0 || n+got.L1Hits < callers {
				t.Errorf("%s: %+v; want %d loads and every read in %s (or L1Hits)", tc.name, got, tc.loads, tc.answeredByName)
			}
		}
	})
}
