package tiered

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
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

// benchKeys are the keys of the GetMany benchmarks.
func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%03d", i)
	}
	return keys
}

// setAll stores newBenchValue() under every key, through c.
func setAll(b *testing.B, c *Cache[benchValue], keys []string) {
	b.Helper()
	for _, k := range keys {
		if err := c.Set(context.Background(), k, newBenchValue()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetMany: GetMany of 100 keys on a real redis-server, beside
// its floor, with context.Background():
//
//   - L1: every key an L1 hit;
//   - L2: Redis warm and L1 off (DisableL1), so every call reads the 100
//     keys with one MGET and decodes them, and fills no L1;
//   - L2FillL1: Redis warm and L1 on but cold: every call reads 100 keys
//     this cache has never read (written to Redis with MSET, outside the
//     timer), so it also fills L1 with them, as a node of a fleet does;
//   - rawMGET: a go-redis MGET of the same Redis keys and, per value,
//     l2.DecodeEnvelope and the JSON codec's Unmarshal, into a slice.
//
// The loader fails the benchmark if called.
func BenchmarkGetMany(b *testing.B) {
	addr := redistest.Start(b).Addr
	keys := benchKeys(100)
	bulk := BulkLoaderFunc[benchValue](func(context.Context, []string) (map[string]benchValue, error) {
		return nil, errors.New("loader called on a warm key")
	})
	b.Run("L1", func(b *testing.B) {
		c := benchCache(b, addr, Options{})
		setAll(b, c, keys)
		c.l1.Wait()
		before := c.Stats()
		loopGetMany(b, c, keys, bulk)
		s := c.Stats()
		if got := s.L1Hits + s.L1Unproven - before.L1Hits - before.L1Unproven; got < uint64(b.N*len(keys)) {
			b.Fatalf("L1 hits %d < %d: not measuring L1", got, b.N*len(keys))
		}
		b.ReportMetric(float64(s.L1Unproven-before.L1Unproven)/float64(b.N), "unproven/op")
	})
	b.Run("L2", func(b *testing.B) {
		c := benchCache(b, addr, Options{DisableL1: true})
		setAll(b, c, keys)
		loopGetMany(b, c, keys, bulk)
		if s := c.Stats(); s.L2Hits < uint64(b.N*len(keys)) || s.Loads != 0 {
			b.Fatalf("stats %+v after %d calls", s, b.N)
		}
	})
	b.Run("L2FillL1", func(b *testing.B) {
		c := benchCache(b, addr, Options{})
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		defer rdb.Close()
		ctx := context.Background()
		s, err := c.encode(newBenchValue(), false, 0)
		if err != nil {
			b.Fatal(err)
		}
		const batch = 100 // sets written at a time
		var sets [][]string
		n := 0 // sets written
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			if len(sets) == 0 {
				b.StopTimer()
				for range batch {
					set := make([]string, len(keys))
					args := make([]any, 0, 2*len(keys))
					for j, k := range keys {
						set[j] = fmt.Sprintf("%s-%d", k, n)
						args = append(args, c.l2.Key(set[j]), s.env)
					}
					if err := rdb.MSet(ctx, args...).Err(); err != nil {
						b.Fatal(err)
					}
					sets, n = append(sets, set), n+1
				}
				b.StartTimer()
			}
			m, err := c.GetMany(ctx, sets[0], bulk)
			if err != nil || len(m) != len(keys) {
				b.Fatal(len(m), err)
			}
			benchSink = m[sets[0][0]]
			sets = sets[1:]
		}
		b.StopTimer()
		if s := c.Stats(); s.L2Hits < uint64(b.N*len(keys)) || s.Loads != 0 {
			b.Fatalf("stats %+v after %d calls", s, b.N)
		}
	})
	b.Run("rawMGET", func(b *testing.B) {
		c := benchCache(b, addr, Options{DisableL1: true})
		setAll(b, c, keys)
		rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
		defer rdb.Close()
		rks := make([]string, len(keys))
		for i, k := range keys {
			rks[i] = c.l2.Key(k)
		}
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			vs, err := rdb.MGet(ctx, rks...).Result()
			if err != nil {
				b.Fatal(err)
			}
			out := make([]benchValue, len(vs))
			for i, v := range vs {
				s, ok := v.(string)
				if !ok {
					b.Fatalf("%s missing", rks[i])
				}
				env, err := l2.DecodeEnvelope([]byte(s))
				if err != nil {
					b.Fatal(err)
				}
				if err := (JSON{}).Unmarshal(env.Payload, &out[i]); err != nil || out[i].ID != 42 {
					b.Fatal(out[i].ID, err)
				}
			}
			benchSink = out[len(out)-1]
		}
	})
}

// loopGetMany times GetMany of keys.
func loopGetMany(b *testing.B, c *Cache[benchValue], keys []string, loader BulkLoader[benchValue]) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		m, err := c.GetMany(ctx, keys, loader)
		if err != nil || len(m) != len(keys) {
			b.Fatal(len(m), err)
		}
		benchSink = m[keys[0]]
	}
	b.StopTimer()
}

// BenchmarkGetOrLoadL1HitFresh: GetOrLoad answered by L1 with Fresh off
// and on (TTL 1h, Fresh 30m: the value is never due, so the hit makes only
// the comparison with its refresh point, which it makes with Fresh off
// too, against a point that never comes). The loader fails the benchmark
// if called. The sub-benchmarks are named fresh=off and fresh=on so that
// benchstat -col /fresh compares them.
func BenchmarkGetOrLoadL1HitFresh(b *testing.B) {
	addr := redistest.Start(b).Addr
	loader := LoaderFunc[benchValue](func(context.Context, string) (benchValue, error) {
		return benchValue{}, errors.New("loader called on an L1 hit")
	})
	for _, bc := range []struct {
		name  string
		fresh time.Duration
	}{{"fresh=off", 0}, {"fresh=on", 30 * time.Minute}} {
		b.Run(bc.name, func(b *testing.B) {
			c := benchCache(b, addr, Options{Fresh: bc.fresh})
			c.l1.Wait()
			before := c.Stats()
			loopGetOrLoad(b, context.Background(), c, loader)
			s := c.Stats()
			if got := s.L1Hits + s.L1Unproven - before.L1Hits - before.L1Unproven; got < uint64(b.N) || s.Loads != 0 || s.Refreshes != 0 {
				b.Fatalf("stats %+v after %d calls", s, b.N)
			}
		})
	}
}

// BenchmarkTags: what tags cost (issue 10), on a real redis-server.
//
//   - load/untagged, load/tagged: a cold GetOrLoad (L1 off, the key
//     deleted before each call outside the timer): GET miss, lease, loader,
//     fill; the tagged loader first calls AddTags with two tags, one more
//     round trip.
//   - hit/untagged, hit/tagged: a GetOrLoad answered by L1 of an entry
//     loaded untagged or tagged. A read never looks at tags, so the two
//     run the same code; the pair shows it.
//   - invalidate/keys=100: InvalidateTags of a tag of 100 cached keys
//     (re-tagged outside the timer).
func BenchmarkTags(b *testing.B) {
	addr := redistest.Start(b).Addr
	ctx := context.Background()
	untagged := LoaderFunc[benchValue](func(context.Context, string) (benchValue, error) { return newBenchValue(), nil })
	tagged := LoaderFunc[benchValue](func(ctx context.Context, _ string) (benchValue, error) {
		if err := AddTags(ctx, "product:42", "category:7"); err != nil {
			return benchValue{}, err
		}
		return newBenchValue(), nil
	})
	for _, tc := range []struct {
		name   string
		loader Loader[benchValue]
	}{{"untagged", untagged}, {"tagged", tagged}} {
		b.Run("load/"+tc.name, func(b *testing.B) {
			c := benchCache(b, addr, Options{DisableL1: true})
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				if err := c.Delete(ctx, "k"); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				v, err := c.GetOrLoad(ctx, "k", tc.loader)
				if err != nil {
					b.Fatal(err)
				}
				benchSink = v
			}
		})
		b.Run("hit/"+tc.name, func(b *testing.B) {
			c := benchCache(b, addr, Options{})
			if _, err := c.GetOrLoad(ctx, "k", tc.loader); err != nil {
				b.Fatal(err)
			}
			c.l1.Wait()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				v, err := c.GetOrLoad(ctx, "k", tc.loader)
				if err != nil {
					b.Fatal(err)
				}
				benchSink = v
			}
		})
	}
	b.Run("invalidate/keys=100", func(b *testing.B) {
		c := benchCache(b, addr, Options{})
		keys := benchKeys(100)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			b.StopTimer()
			for _, k := range keys {
				if _, err := c.GetOrLoad(ctx, k, tagged); err != nil {
					b.Fatal(err)
				}
			}
			b.StartTimer()
			if err := c.InvalidateTags(ctx, "product:42"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchTracer is a Tracer that does the least a real one does: it
// allocates a span, reads the clock at its start and end, and puts it in
// the context it returns.
type benchTracer struct{ ended atomic.Uint64 }

type benchSpan struct {
	t          *benchTracer
	s          SpanStart
	start, end time.Time
	e          SpanEnd
}

func (t *benchTracer) Start(ctx context.Context, s SpanStart) (context.Context, func(SpanEnd)) {
	sp := &benchSpan{t: t, s: s, start: time.Now()}
	return context.WithValue(ctx, spanKey{}, sp), sp.finish
}

func (sp *benchSpan) finish(e SpanEnd) {
	sp.end, sp.e = time.Now(), e
	sp.t.ended.Add(1)
}

// noopTracer starts no span: the cost of the hook's calls alone.
type noopTracer struct{}

func (noopTracer) Start(ctx context.Context, _ SpanStart) (context.Context, func(SpanEnd)) {
	return ctx, noopEnd
}

func noopEnd(SpanEnd) {}

// BenchmarkGetOrLoadTraced: what Options.Tracer costs GetOrLoad, on a real
// redis-server, with context.Background():
//
//   - path=miss: a key never read before each call (L1 on): GET miss,
//     lease, loader, fill of Redis and L1; two spans (get-or-load, load)
//     when traced;
//   - path=l1hit: a key in L1, not traced (TraceL1Hits off);
//   - path=l1hit-traced: the same with TraceL1Hits: one span per hit.
//
// tracer=off has no Tracer; noop one whose Start returns ctx and a shared
// func; span one that allocates a span, reads the clock twice and puts
// the span in the context (benchTracer). otelcache's BenchmarkTracer
// measures the OpenTelemetry SDK. Compare with benchstat -col /tracer.
func BenchmarkGetOrLoadTraced(b *testing.B) {
	addr := redistest.Start(b).Addr
	hitLoader := LoaderFunc[benchValue](func(context.Context, string) (benchValue, error) {
		return benchValue{}, errors.New("loader called on an L1 hit")
	})
	missLoader := LoaderFunc[benchValue](func(context.Context, string) (benchValue, error) { return newBenchValue(), nil })
	tracers := []struct {
		name string
		new  func() Tracer
	}{
		{"off", func() Tracer { return nil }},
		{"noop", func() Tracer { return noopTracer{} }},
		{"span", func() Tracer { return &benchTracer{} }},
	}
	round := 0 // numbers the keys of every run of every sub-benchmark: all never read
	for _, path := range []string{"miss", "l1hit", "l1hit-traced"} {
		for _, tr := range tracers {
			if path == "l1hit-traced" && tr.name == "off" {
				continue // the same as l1hit/tracer=off
			}
			b.Run("path="+path+"/tracer="+tr.name, func(b *testing.B) {
				tracer := tr.new()
				c := benchCache(b, addr, Options{Tracer: tracer, TraceL1Hits: path == "l1hit-traced"})
				c.l1.Wait()
				ctx := context.Background()
				before := c.Stats()
				if path != "miss" {
					loopGetOrLoad(b, ctx, c, hitLoader)
					s := c.Stats()
					if got := s.L1Hits + s.L1Unproven - before.L1Hits - before.L1Unproven; got < uint64(b.N) || s.Loads != 0 {
						b.Fatalf("stats %+v after %d calls", s, b.N)
					}
					return
				}
				var keys []string // keys never read, made outside the timer
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if len(keys) == 0 {
						b.StopTimer()
						for i := range 1000 {
							keys = append(keys, fmt.Sprintf("miss-%d-%d", round, i))
						}
						round++
						b.StartTimer()
					}
					v, err := c.GetOrLoad(ctx, keys[0], missLoader)
					if err != nil || v.ID != 42 {
						b.Fatal(v.ID, err)
					}
					benchSink = v
					keys = keys[1:]
				}
				b.StopTimer()
				if s := c.Stats(); s.Loads-before.Loads < uint64(b.N) {
					b.Fatalf("loads %d < %d: not measuring misses", s.Loads-before.Loads, b.N)
				}
				if bt, ok := tracer.(*benchTracer); ok && bt.ended.Load() < 2*uint64(b.N) {
					b.Fatalf("%d spans ended for %d misses, want 2 each", bt.ended.Load(), b.N)
				}
			})
		}
	}
}
