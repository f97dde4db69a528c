package tiered

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/faultproxy"
	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/l1"
	"github.com/tieredcache/tiered/l2"
)

// benchSink receives values so that the compiler cannot elide their copy.
var benchSink benchValue

// benchValue is the ~256-byte struct every benchmark reads.
type benchValue struct {
	ID, Version, Price, Stock               int64
	Name, Category, Description, SKU        string
	Tags                                    [8]string
	CreatedUnix, UpdatedUnix, Weight, Score int64
}

func newBenchValue() benchValue {
	return benchValue{
		ID: 42, Version: 7, Price: 1999, Stock: 12,
		Name: "espresso cup", Category: "kitchen", Description: "a small white porcelain cup", SKU: "EC-42",
		Tags:        [8]string{"cup", "white", "porcelain", "espresso", "kitchen", "gift", "small", "sale"},
		CreatedUnix: 1700000000, UpdatedUnix: 1764000000, Weight: 120, Score: 5,
	}
}

func TestBenchValueSize(t *testing.T) {
	if n := unsafe.Sizeof(benchValue{}); n != 256 {
		t.Fatalf("benchValue is %d bytes, want 256", n)
	}
}

// BenchmarkGetL1Hit: Cache.Get answered by L1, on a real redis-server so
// that the freshness proof's PINGs have a real round trip. It also reports
// the PINGs the bus sent per second of reading flat out, and how many
// reads could not use L1 because the proof had lapsed (unproven/op).
func BenchmarkGetL1Hit(b *testing.B) {
	c := benchCache(b, redistest.Start(b).Addr, Options{})
	c.l1.Wait()
	pings, unproven := c.Bus().Stats().Pings, c.Stats().L1Unproven
	loopGet(b, context.Background(), c)
	if s := c.Stats(); s.L1Hits+s.L1Unproven < uint64(b.N) {
		b.Fatalf("L1 hits %d < %d: not measuring L1", s.L1Hits, b.N)
	}
	b.ReportMetric(float64(c.Bus().Stats().Pings-pings)/b.Elapsed().Seconds(), "pings/s")
	b.ReportMetric(float64(c.Stats().L1Unproven-unproven)/float64(b.N), "unproven/op")
}

// BenchmarkGetOrLoadBreakerOpen: GetOrLoad of a key not in L1 while Redis
// is silent (a proxy that forwards nothing, for the data and the bus) and
// the breaker is open: the cost of a read that skips Redis, above a loader
// that returns at once. Without the breaker every such read waited
// OpTimeout (200ms).
func BenchmarkGetOrLoadBreakerOpen(b *testing.B) {
	p, err := faultproxy.New(redistest.Start(b).Addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	c := benchCache(b, p.Addr(), Options{DisableL1: true})
	p.Silence()
	ctx := context.Background()
	loader := LoaderFunc[benchValue](func(context.Context, string) (benchValue, error) { return newBenchValue(), nil })
	for i := 0; c.brk.allow(); i++ {
		if i > 10 {
			b.Fatal("the breaker did not open")
		}
		if _, err := c.GetOrLoad(ctx, "k", loader); err != nil {
			b.Fatal(err)
		}
	}
	loopGetOrLoad(b, ctx, c, loader)
	if c.brk.allow() {
		b.Fatal("the breaker closed during the benchmark")
	}
}

// benchCache returns a Cache over a fresh client of addr whose bus is
// healthy and that holds newBenchValue() under "k"; both close when b ends.
func benchCache(b *testing.B, addr string, opts Options) *Cache[benchValue] {
	b.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	b.Cleanup(func() { rdb.Close() })
	opts.Namespace, opts.TTL = "bench", time.Hour
	c, err := New[benchValue](rdb, &opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if err := c.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	if err := c.Set(ctx, "k", newBenchValue()); err != nil {
		b.Fatal(err)
	}
	return c
}

// loopGet times Get of the benchmark key.
func loopGet(b *testing.B, ctx context.Context, c *Cache[benchValue]) {
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		v, err := c.Get(ctx, "k")
		if err != nil || v.ID != 42 {
			b.Fatal(v.ID, err)
		}
		benchSink = v
	}
	b.StopTimer()
}

// loopGetOrLoad times GetOrLoad of the benchmark key.
func loopGetOrLoad(b *testing.B, ctx context.Context, c *Cache[benchValue], loader Loader[benchValue]) {
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		v, err := c.GetOrLoad(ctx, "k", loader)
		if err != nil || v.ID != 42 {
			b.Fatal(v.ID, err)
		}
		benchSink = v
	}
	b.StopTimer()
}

// BenchmarkRistrettoGet: the floor, a raw ristretto v2 Get of the same
// decoded value, configured as package l1 configures it.
func BenchmarkRistrettoGet(b *testing.B) {
	rc, err := ristretto.NewCache(&ristretto.Config[string, benchValue]{
		NumCounters: 10 * l1.DefaultMaxBytes / l1.DefaultAverageEntryBytes, MaxCost: l1.DefaultMaxBytes,
		BufferItems: 64, IgnoreInternalCost: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	rc.SetWithTTL("k", newBenchValue(), 300, time.Hour)
	rc.Wait()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		v, ok := rc.Get("k")
		if !ok || v.ID != 42 {
			b.Fatal(v.ID, ok)
		}
		benchSink = v
	}
}

// BenchmarkRistrettoGetPointer: a raw ristretto v2 Get of a pointer to the
// same value, which is how L1 stores it; the return copies the value, as
// Cache.Get does.
func BenchmarkRistrettoGetPointer(b *testing.B) {
	rc, err := ristretto.NewCache(&ristretto.Config[string, *benchValue]{
		NumCounters: 10 * l1.DefaultMaxBytes / l1.DefaultAverageEntryBytes, MaxCost: l1.DefaultMaxBytes,
		BufferItems: 64, IgnoreInternalCost: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	v0 := newBenchValue()
	rc.SetWithTTL("k", &v0, 300, time.Hour)
	rc.Wait()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		p, ok := rc.Get("k")
		if !ok {
			b.Fatal(ok)
		}
		benchSink = *p // copy the value out, as Cache.Get's return does
		if benchSink.ID != 42 {
			b.Fatal(benchSink.ID)
		}
	}
}

// BenchmarkGetL2Hit: Cache.Get answered by a real Redis, L1 off, with a
// context that cannot be cancelled (context.Background).
func BenchmarkGetL2Hit(b *testing.B) {
	benchGetL2Hit(b, context.Background())
}

// BenchmarkGetL2HitCancellable: the same with a cancellable context, as a
// request's: the flight runs on its own goroutine so the caller can leave.
func BenchmarkGetL2HitCancellable(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	benchGetL2Hit(b, ctx)
}

func benchGetL2Hit(b *testing.B, ctx context.Context) {
	c := benchCache(b, redistest.Start(b).Addr, Options{DisableL1: true})
	loopGet(b, ctx, c)
	if st := c.Stats(); st.L2Hits < uint64(b.N) {
		b.Fatalf("L2 hits %d < %d", st.L2Hits, b.N)
	}
}

// BenchmarkGetOrLoadL2Hit: Cache.GetOrLoad answered by a real Redis, L1
// off. Like Get it reads with a plain GET and only runs the get-or-lease
// script on a miss (docs/benchmarks.md says why).
func BenchmarkGetOrLoadL2Hit(b *testing.B) {
	c := benchCache(b, redistest.Start(b).Addr, Options{DisableL1: true})
	ctx := context.Background()
	loader := LoaderFunc[benchValue](func(context.Context, string) (benchValue, error) {
		return benchValue{}, errors.New("loader called on an L2 hit")
	})
	loopGetOrLoad(b, ctx, c, loader)
	if st := c.Stats(); st.L2Hits < uint64(b.N) || st.Loads != 0 {
		b.Fatalf("stats %+v after %d calls", st, b.N)
	}
}

// BenchmarkRedisGetDecode: the floor, a raw go-redis GET of the same key and
// a JSON decode of the same payload bytes.
func BenchmarkRedisGetDecode(b *testing.B) {
	s := redistest.Start(b).Addr
	rdb := redis.NewClient(&redis.Options{Addr: s})
	defer rdb.Close()
	ctx := context.Background()
	payload, _ := json.Marshal(newBenchValue())
	env := l2.Envelope{Expiry: time.Now().Add(time.Hour), Payload: payload}.AppendBinary(nil)
	if err := rdb.Set(ctx, "bench:{k}", env, time.Hour).Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		raw, err := rdb.Get(ctx, "bench:{k}").Bytes()
		if err != nil {
			b.Fatal(err)
		}
		var v benchValue
		if err := json.Unmarshal(raw[l2.HeaderSize:], &v); err != nil || v.ID != 42 {
			b.Fatal(v.ID, err)
		}
	}
}
