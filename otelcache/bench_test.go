package otelcache_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/internal/tieredtest"
	"github.com/tieredcache/tiered/otelcache"
	"github.com/tieredcache/tiered/tiered"
)

// BenchmarkTracer: what tracing with the OpenTelemetry SDK costs, on a real
// redis-server, beside tiered's BenchmarkGetOrLoadTraced (same value
// type, same paths):
//
//   - path=miss: GetOrLoad of a key never read before (L1 on): GET miss,
//     lease, loader, fill; two spans when traced (get-or-load, load);
//   - path=l1hit: GetOrLoad answered by L1, not traced (TraceL1Hits off);
//   - path=l1hit-traced: the same with TraceL1Hits: one span per hit.
//
// tracer=off has no Tracer; tracer=otel is otelcache.Tracer on an SDK
// TracerProvider that samples every span and hands it to a batch span
// processor with an exporter that drops it (tracetest.NewNoopExporter):
// the SDK's cost without an exporter's.
func BenchmarkTracer(b *testing.B) {
	addr := redistest.Start(b).Addr
	value := "a value of about the size of the core's benchmarks, 256 bytes: " +
		"................................................................................................................................................................................................"
	hitLoader := tiered.LoaderFunc[string](func(context.Context, string) (string, error) {
		return "", fmt.Errorf("loader called on an L1 hit")
	})
	missLoader := tiered.LoaderFunc[string](func(context.Context, string) (string, error) { return value, nil })
	round := 0 // numbers the keys of every run: all never read
	for _, path := range []string{"miss", "l1hit", "l1hit-traced"} {
		for _, traced := range []bool{false, true} {
			name := "path=" + path + "/tracer=off"
			if traced {
				name = "path=" + path + "/tracer=otel"
			}
			b.Run(name, func(b *testing.B) {
				opts := &tiered.Options{Namespace: "bench", TTL: time.Hour, TraceL1Hits: path == "l1hit-traced"}
				if traced {
					tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
					b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
					opts.Tracer = otelcache.Tracer(tp.Tracer("bench"), nil)
				}
				rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
				b.Cleanup(func() { rdb.Close() })
				c := tieredtest.Cache[string](b, rdb, opts)
				ctx := context.Background()
				var keys []string // made outside the timer
				if path != "miss" {
					if err := c.Set(ctx, "k", value); err != nil {
						b.Fatal(err)
					}
					waitL1(b, c, "k")
				}
				before := c.Stats()
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if path != "miss" {
						if _, err := c.GetOrLoad(ctx, "k", hitLoader); err != nil {
							b.Fatal(err)
						}
						continue
					}
					if len(keys) == 0 {
						b.StopTimer()
						for i := range 1000 {
							keys = append(keys, fmt.Sprintf("miss-%d-%d", round, i))
						}
						round++
						b.StartTimer()
					}
					if _, err := c.GetOrLoad(ctx, keys[0], missLoader); err != nil {
						b.Fatal(err)
					}
					keys = keys[1:]
				}
				b.StopTimer()
				s := c.Stats()
				if path == "miss" && s.Loads-before.Loads < uint64(b.N) {
					b.Fatalf("loads %d < %d: not measuring misses", s.Loads-before.Loads, b.N)
				}
				if path != "miss" && s.L1Hits+s.L1Unproven-before.L1Hits-before.L1Unproven < uint64(b.N) {
					b.Fatalf("stats %+v after %d calls: not measuring L1", s, b.N)
				}
			})
		}
	}
}
