package otelcache_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tieredcache/tiered/otelcache"
	"github.com/tieredcache/tiered/tiered"
)

// Example registers a cache and its bus on a MeterProvider and reads the
// loads back. A service would give the provider a Prometheus or OTLP
// exporter instead of the manual reader.
func Example() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	cache, err := tiered.New[string](rdb, &tiered.Options{Namespace: "users", TTL: time.Hour})
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	if err := cache.WaitReady(ctx); err != nil {
		panic(err)
	}

	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer provider.Shutdown(ctx)
	meter := provider.Meter("github.com/tieredcache/tiered/otelcache")

	// The cache does not expose its namespace: pass the one it was made with.
	reg, err := otelcache.Register(meter, cache, "users", nil)
	if err != nil {
		panic(err)
	}
	defer reg.Unregister()
	// Once per bus, however many caches share it.
	busReg, err := otelcache.RegisterBus(meter, cache.Bus(), nil)
	if err != nil {
		panic(err)
	}
	defer busReg.Unregister()

	load := tiered.LoaderFunc[string](func(_ context.Context, key string) (string, error) {
		return "user " + key, nil
	})
	for _, id := range []string{"1", "2", "3"} {
		if _, err := cache.GetOrLoad(ctx, id, load); err != nil {
			panic(err)
		}
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		panic(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch m.Name {
		case "tiered.cache.loads", "tiered.outbox.pending", "tiered.bus.healthy":
			var v int64
			var ns string
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				v = d.DataPoints[0].Value
				n, _ := d.DataPoints[0].Attributes.Value(otelcache.NamespaceKey)
				ns = n.AsString()
			case metricdata.Gauge[int64]:
				v = d.DataPoints[0].Value
			}
			fmt.Printf("%s{%s} %d %s\n", m.Name, ns, v, m.Unit)
		}
	}
	// Output:
	// tiered.cache.loads{users} 3 {call}
	// tiered.outbox.pending{} 0 {key}
	// tiered.bus.healthy{} 1 1
}

// ExampleTracer traces a cache with OpenTelemetry: a cold read has a span
// with its loader's span under it (an L1 hit would have none). A service
// would give the provider a batching OTLP exporter, and add go-redis's
// redisotel tracing hook to the client, whose Redis spans then nest under
// the cache's:
//
//	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter))
//	if err := redisotel.InstrumentTracing(rdb, redisotel.WithTracerProvider(tp)); err != nil { ... }
func ExampleTracer() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(ctx)

	cache, err := tiered.New[string](rdb, &tiered.Options{
		Namespace: "users", TTL: time.Hour,
		Tracer: otelcache.Tracer(tp.Tracer("github.com/tieredcache/tiered/otelcache"), nil),
	})
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	if err := cache.WaitReady(ctx); err != nil {
		panic(err)
	}

	load := tiered.LoaderFunc[string](func(_ context.Context, key string) (string, error) {
		return "user " + key, nil
	})
	if _, err := cache.GetOrLoad(ctx, "1", load); err != nil {
		panic(err)
	}
	ended := spans.Ended()
	names := map[trace.SpanID]string{}
	for _, s := range ended {
		names[s.SpanContext().SpanID()] = s.Name()
	}
	for _, s := range ended {
		line := s.Name()
		if p, ok := names[s.Parent().SpanID()]; ok {
			line += " under " + p
		}
		for _, a := range s.Attributes() {
			if a.Key == otelcache.OriginKey {
				line += ", answered by the " + a.Value.AsString()
			}
		}
		fmt.Println(line)
	}
	// Output:
	// tiered.load under tiered.get-or-load
	// tiered.get-or-load, answered by the loader
}
