package tiered

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/l1"
)

// Parallel L1 hits: every P reading at once (b.RunParallel), from one hot
// key or from parallelKeys keys in a Zipf distribution, through Cache.Get
// and through a raw ristretto Get of the same values configured as package
// l1 configures it. The two run side by side: compare them within one run
// (docs/benchmarks.md). What the cache adds to ristretto on this path is
// the proof check (atomic loads), the outbox check and one counter, striped
// so that Ps hitting at once write different cache lines (stats.go).

// parallelKeys is the number of keys of the zipf case.
const parallelKeys = 1000

// parallelCases are the key distributions: the key indexes each goroutine
// reads, in a loop. Drawn in advance, so that no random number generator
// runs inside the timed loop.
var parallelCases = []struct {
	name string
	seq  func(seed uint64) []int
}{
	{"hot", func(uint64) []int { return []int{0} }},
	{"zipf", func(seed uint64) []int {
		z := rand.NewZipf(rand.New(rand.NewPCG(seed, 1)), 1.1, 1, parallelKeys-1)
		seq := make([]int, 4096)
		for i := range seq {
			seq[i] = int(z.Uint64())
		}
		return seq
	}},
}

func parallelKey(i int) string { return "p" + strconv.Itoa(i) }

// BenchmarkGetL1HitParallel: Cache.Get answered by L1 on every P.
func BenchmarkGetL1HitParallel(b *testing.B) {
	c := benchCache(b, redistest.Start(b).Addr, Options{})
	ctx := context.Background()
	keys := make([]string, parallelKeys)
	for i := range keys {
		keys[i] = parallelKey(i)
		if err := c.Set(ctx, keys[i], newBenchValue()); err != nil {
			b.Fatal(err)
		}
	}
	c.l1.Wait()
	for _, pc := range parallelCases {
		b.Run("keys="+pc.name, func(b *testing.B) {
			var seed atomic.Uint64
			before := c.Stats()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				seq := pc.seq(seed.Add(1))
				for i := 0; pb.Next(); i++ {
					v, err := c.Get(ctx, keys[seq[i%len(seq)]])
					if err != nil || v.ID != 42 {
						b.Error(v.ID, err)
						return
					}
				}
			})
			b.StopTimer()
			after := c.Stats()
			if hits := after.L1Hits - before.L1Hits; hits+after.L1Unproven-before.L1Unproven < uint64(b.N) {
				b.Fatalf("L1 hits %d < %d: not measuring L1", hits, b.N)
			}
		})
	}
}

// BenchmarkRistrettoGetParallel: the floor, a raw ristretto Get on every P.
func BenchmarkRistrettoGetParallel(b *testing.B) {
	rc, err := ristretto.NewCache(&ristretto.Config[string, benchValue]{
		NumCounters: 10 * l1.DefaultMaxBytes / l1.DefaultAverageEntryBytes, MaxCost: l1.DefaultMaxBytes,
		BufferItems: 64, IgnoreInternalCost: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	keys := make([]string, parallelKeys)
	for i := range keys {
		keys[i] = parallelKey(i)
		rc.SetWithTTL(keys[i], newBenchValue(), 300, time.Hour)
	}
	rc.Wait()
	for _, pc := range parallelCases {
		b.Run("keys="+pc.name, func(b *testing.B) {
			var seed atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				seq := pc.seq(seed.Add(1))
				for i := 0; pb.Next(); i++ {
					v, ok := rc.Get(keys[seq[i%len(seq)]])
					if !ok || v.ID != 42 {
						b.Error(v.ID, ok)
						return
					}
				}
			})
		})
	}
}
