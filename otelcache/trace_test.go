package otelcache_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tieredcache/tiered/internal/tieredtest"
	"github.com/tieredcache/tiered/otelcache"
	"github.com/tieredcache/tiered/tiered"
)

// redisSpans is a go-redis hook that starts a span per command, named
// "redis.<command>", as go-redis's redisotel does (which this module does
// not depend on): it shows where the Redis spans of a traced cache nest.
type redisSpans struct{ tr trace.Tracer }

func (h redisSpans) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h redisSpans) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		ctx, span := h.tr.Start(ctx, "redis."+cmd.Name(), trace.WithSpanKind(trace.SpanKindClient))
		defer span.End()
		return next(ctx, cmd)
	}
}
func (h redisSpans) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ctx, span := h.tr.Start(ctx, "redis.pipeline", trace.WithSpanKind(trace.SpanKindClient))
		defer span.End()
		return next(ctx, cmds)
	}
}

// tracedCache returns a ready cache of strings in namespace "users",
// traced by otelcache.Tracer with opts into the returned exporter, on a
// client whose commands are traced by redisSpans.
func tracedCache(t *testing.T, opts *otelcache.TracerOptions) (*tiered.Cache[string], *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := tp.Tracer("test")
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	rdb.AddHook(redisSpans{tr})
	t.Cleanup(func() { rdb.Close() })
	c := tieredtest.Cache[string](t, rdb, &tiered.Options{
		Namespace: "users", TTL: time.Minute, MaxStaleness: time.Minute,
		Tracer: otelcache.Tracer(tr, opts),
	})
	exp.Reset() // the server check's commands, before any operation
	return c, exp
}

// trees renders the cache's spans and the Redis commands right under them
// as "parent > child" lines, the cache's spans with their attributes, in
// the order they ended. It leaves out what depends on the client's state:
// redis.eval (go-redis runs a script with EVALSHA and, the first time,
// again with EVAL after the server's NOSCRIPT), the commands of a new
// connection's handshake (under the command that needed it), and the
// commands of the cache's background work (root spans: a server check).
func trees(spans tracetest.SpanStubs) []string {
	names := map[trace.SpanID]string{}
	for _, s := range spans {
		names[s.SpanContext.SpanID()] = s.Name
	}
	var out []string
	for _, s := range spans {
		p, ok := names[s.Parent.SpanID()]
		ours := strings.HasPrefix(s.Name, otelcache.SpanPrefix)
		if s.Name == "redis.eval" || !ours && !strings.HasPrefix(p, otelcache.SpanPrefix) {
			continue
		}
		line := s.Name
		if ok {
			line = p + " > " + line
		} else if s.Parent.IsValid() {
			line = "? > " + line
		}
		if strings.HasPrefix(s.Name, otelcache.SpanPrefix) {
			line += " " + attrs(s.Attributes)
			if s.Status.Code != codes.Unset {
				line += fmt.Sprintf(" status=%v(%s) events=%d", s.Status.Code, s.Status.Description, len(s.Events))
			}
		}
		out = append(out, line)
	}
	return out
}

func attrs(kvs []attribute.KeyValue) string {
	set := attribute.NewSet(kvs...)
	return set.Encoded(attribute.DefaultEncoder())
}

func wantTrees(t *testing.T, what string, got tracetest.SpanStubs, want ...string) {
	t.Helper()
	g := trees(got)
	if fmt.Sprint(g) != fmt.Sprint(want) {
		t.Fatalf("%s: spans\n%q\nwant\n%q", what, g, want)
	}
}

// TestTracer: span names, parents, attributes and status of a traced
// cache's operations, through the SDK.
func TestTracer(t *testing.T) {
	ctx := context.Background()
	c, exp := tracedCache(t, &otelcache.TracerOptions{
		RecordKeys: true, Attributes: []attribute.KeyValue{attribute.String("service.part", "users")},
	})
	boom := errors.New("boom")
	load := tiered.LoaderFunc[string](func(ctx context.Context, key string) (string, error) {
		if !trace.SpanFromContext(ctx).SpanContext().IsValid() {
			return "", errors.New("no span in the loader's context")
		}
		switch key {
		case "gone":
			return "", tiered.ErrNotFound
		case "bad":
			return "", boom
		}
		return "user " + key, nil
	})

	if _, err := c.GetOrLoad(ctx, "1", load); err != nil {
		t.Fatal(err)
	}
	// The get-or-load span ends last, with its loader's span and its Redis
	// commands (GET, the lease script, the fill script) under it.
	wantTrees(t, "cold GetOrLoad", exp.GetSpans(),
		"tiered.get-or-load > redis.get",
		"tiered.get-or-load > redis.evalsha",
		"tiered.get-or-load > tiered.load service.part=users,tiered.key=1,tiered.namespace=users",
		"tiered.get-or-load > redis.evalsha",
		"tiered.get-or-load service.part=users,tiered.key=1,tiered.namespace=users,tiered.origin=loader")
	exp.Reset()

	// An L1 hit is not traced. (L1 takes a value in the background:
	// until it has, the reads are traced as Redis hits.)
	waitL1(t, c, "1")
	exp.Reset()
	before := c.Stats().L1Hits
	if _, err := c.GetOrLoad(ctx, "1", load); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.L1Hits != before+1 {
		t.Fatalf("L1 hits = %d, want %d", s.L1Hits, before+1)
	}
	wantTrees(t, "L1 hit", exp.GetSpans())

	// Not found is an answer, not an error; the loader's error is one.
	if _, err := c.GetOrLoad(ctx, "gone", load); !errors.Is(err, tiered.ErrNotFound) {
		t.Fatal(err)
	}
	if _, err := c.GetOrLoad(ctx, "bad", load); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	var got tracetest.SpanStubs
	for _, s := range exp.GetSpans() {
		if strings.HasPrefix(s.Name, otelcache.SpanPrefix) {
			got = append(got, s)
		}
	}
	wantTrees(t, "not found and error", got,
		"tiered.get-or-load > tiered.load service.part=users,tiered.key=gone,tiered.namespace=users",
		"tiered.get-or-load service.part=users,tiered.key=gone,tiered.namespace=users,tiered.origin=loader",
		"tiered.get-or-load > tiered.load service.part=users,tiered.key=bad,tiered.namespace=users status=Error(boom) events=1",
		"tiered.get-or-load service.part=users,tiered.key=bad,tiered.namespace=users status=Error(boom) events=1")
	if ev := got[3].Events[0]; ev.Name != "exception" {
		t.Fatalf("error event %q, want exception", ev.Name)
	}
	exp.Reset()

	bulk := tiered.BulkLoaderFunc[string](func(ctx context.Context, keys []string) (map[string]string, error) {
		m := map[string]string{}
		for _, k := range keys {
			m[k] = "user " + k
		}
		return m, nil
	})
	if m, err := c.GetMany(ctx, []string{"1", "2", "3"}, bulk); err != nil || len(m) != 3 {
		t.Fatal(m, err)
	}
	wantTrees(t, "GetMany", exp.GetSpans(),
		"tiered.get-many > redis.mget",
		"tiered.get-many > redis.pipeline", // the lease scripts
		"tiered.get-many > tiered.load-many service.part=users,tiered.keys=2,tiered.namespace=users",
		"tiered.get-many > redis.pipeline", // the fill scripts
		"tiered.get-many service.part=users,tiered.keys=2,tiered.namespace=users")
	exp.Reset()

	if err := c.Delete(ctx, "2"); err != nil {
		t.Fatal(err)
	}
	wantTrees(t, "Delete", exp.GetSpans(),
		"tiered.delete > redis.evalsha",
		"tiered.delete service.part=users,tiered.key=2,tiered.namespace=users")
}

// TestTracerKeys: keys are recorded only when TracerOptions.RecordKeys
// asks.
func TestTracerKeys(t *testing.T) {
	ctx := context.Background()
	c, exp := tracedCache(t, nil)
	if _, err := c.Get(ctx, "secret@example.com"); !errors.Is(err, tiered.ErrNotFound) {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "a", "b"); err != nil {
		t.Fatal(err)
	}
	wantTrees(t, "without keys", exp.GetSpans(),
		"tiered.get > redis.get",
		"tiered.get tiered.namespace=users,tiered.origin=redis",
		"tiered.delete > redis.evalsha",
		"tiered.delete tiered.keys=2,tiered.namespace=users")
	if otelcache.Tracer(nil, nil) != nil {
		t.Fatal("Tracer(nil) is not nil")
	}
}

// waitL1 reads key until L1 answers.
func waitL1(t testing.TB, c *tiered.Cache[string], key string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		before := c.Stats().L1Hits
		if _, err := c.Get(context.Background(), key); err != nil {
			t.Fatal(err)
		}
		if c.Stats().L1Hits > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never in L1", key)
		}
		time.Sleep(time.Millisecond) // polling a condition
	}
}
