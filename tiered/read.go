package tiered

import (
	"context"

	"github.com/tieredcache/tiered/internal/mono"
)

// This file is the read path: the L1 fast path of Get and GetOrLoad, and
// the flights that answer a miss, one per key and generation (flightsFor).

// Get returns the value of key from L1 or Redis. It returns ErrNotFound on
// a miss (or a cached "not found"), an error wrapping ErrUnavailable when
// Redis failed, and ErrKeyEmpty, ErrKeyTooLong or ErrClosed.
func (c *Cache[V]) Get(ctx context.Context, key string) (V, error) {
	if reserved(key) {
		var zero V
		c.stats.rejected.Add(1)
		return zero, ErrKeyReserved
	}
	return c.get(ctx, key)
}

// get is Get without the reserved-key check. With a Tracer, it opens a
// span once L1 did not answer, or from the start with TraceL1Hits; without
// one, the hit path tests c.o.Tracer once.
func (c *Cache[V]) get(ctx context.Context, key string) (V, error) {
	if err := c.checkKey(key); err != nil {
		var zero V
		return zero, err
	}
	var end func(SpanEnd)
	if c.o.Tracer != nil && c.o.TraceL1Hits {
		ctx, end = c.startSpan(ctx, OpGet, key, 1)
	}
	now := mono.Now()
	proven := c.bus.Proven(now)
	if e, ok := c.fromL1(key, now, proven); ok {
		c.stats.hits.add(e.neg)
		if e.stale != nil {
			c.servedStale(ctx, key, e.stale)
		}
		v, err := e.result()
		if end != nil {
			end(readEnd(err, l1Origin(e), false))
		}
		return v, err
	}
	if end == nil && c.o.Tracer != nil {
		ctx, end = c.startSpan(ctx, OpGet, key, 1)
	}
	v, from, shared, err := c.fetchFlight(ctx, key, now, proven)
	if end != nil {
		end(readEnd(err, from, shared))
	}
	return v, err
}

// fetchFlight is the miss path of get: the flight of key, at now.
func (c *Cache[V]) fetchFlight(ctx context.Context, key string, now int64, proven bool) (V, Origin, bool, error) {
	return c.flight(ctx, &c.flightsFor(now, proven).fetches, key, func(fctx context.Context) outcome[V] {
		return c.fetch(fctx, key)
	})
}

// l1Origin is the origin of an answer from the L1 entry e: a value that
// fail-safe served (and L1 keeps for FailSafeThrottle) is still stale.
func l1Origin[V any](e *entry[V]) Origin {
	if e.stale != nil {
		return OriginStale
	}
	return OriginL1
}

// GetOrLoad returns the value of key from L1, Redis, or loader, in that
// order, and caches what loader returns in both tiers.
//
// Concurrent calls for one key share one flight: one Redis read and at most
// one loader call per process, and, through the Redis lease, one loader
// call per fleet. A caller whose ctx ends leaves with ctx's error; the flight
// goes on for the others. If Redis fails, GetOrLoad falls through to loader:
// a read never fails only because Redis did.
//
// Errors: ErrNotFound when loader returned it or a cached "not found" says
// so; the loader's error; a *PanicError if it panicked; ctx's error;
// ErrKeyEmpty, ErrKeyTooLong, ErrNilLoader or ErrClosed. A loaded value too
// large to cache (ErrValueTooLarge) or that the codec cannot encode is
// still returned, and counted in Stats.Rejected.
//
// All callers of GetOrLoad for one key should pass equivalent loaders: a
// caller may receive the result of another caller's loader.
func (c *Cache[V]) GetOrLoad(ctx context.Context, key string, loader Loader[V]) (V, error) {
	if reserved(key) {
		var zero V
		c.stats.rejected.Add(1)
		return zero, ErrKeyReserved
	}
	return c.getOrLoad(ctx, key, loader)
}

// getOrLoad is GetOrLoad without the reserved-key check; spans as in get.
func (c *Cache[V]) getOrLoad(ctx context.Context, key string, loader Loader[V]) (V, error) {
	if loader == nil {
		var zero V
		return zero, ErrNilLoader
	}
	if err := c.checkKey(key); err != nil {
		var zero V
		return zero, err
	}
	var end func(SpanEnd)
	if c.o.Tracer != nil && c.o.TraceL1Hits {
		ctx, end = c.startSpan(ctx, OpGetOrLoad, key, 1)
	}
	now := mono.Now()
	proven := c.bus.Proven(now)
	if e, ok := c.fromL1(key, now, proven); ok {
		c.stats.hits.add(e.neg)
		if now >= e.refresh || e.stale != nil { // rare: Fresh or MaxStale on
			c.l1Special(ctx, key, e, now, loader)
		}
		v, err := e.result()
		if end != nil {
			end(readEnd(err, l1Origin(e), false))
		}
		return v, err
	}
	if end == nil && c.o.Tracer != nil {
		ctx, end = c.startSpan(ctx, OpGetOrLoad, key, 1)
	}
	v, from, shared, err := c.loadFlight(ctx, key, loader, now, proven)
	if end != nil {
		end(readEnd(err, from, shared))
	}
	return v, err
}

// loadFlight is the miss path of getOrLoad: the flight of key, at now.
func (c *Cache[V]) loadFlight(ctx context.Context, key string, loader Loader[V], now int64, proven bool) (V, Origin, bool, error) {
	return c.flight(ctx, &c.flightsFor(now, proven).loads, key, func(fctx context.Context) outcome[V] {
		return c.load(fctx, key, loader)
	})
}

// flights is one generation of the flights callers may join.
type flights[V any] struct {
	loads   group[V] // GetOrLoad and GetMany flights, by key
	fetches group[V] // Get and GetManyCached flights, by key
	born    int64    // mono time of the generation's creation
}

func newFlights[V any](now int64) *flights[V] {
	return &flights[V]{born: now}
}

// flightsFor returns the flights a caller arriving at now may join.
//
// A caller must not join a flight that began before a write it should see:
// the flight may return what was there before. Every write this node hears
// of forgets its keys' flights (see written), and while the bus proves L1
// fresh it has heard of every write acknowledged more than MaxStaleness
// ago. Without that proof it may have missed some, so a generation of
// flights is then joinable for at most MaxStaleness after it was created:
// a flight in it began less than MaxStaleness before the caller, and saw
// every write acknowledged before that. An older generation is replaced,
// and its flights finish for the callers they have.
func (c *Cache[V]) flightsFor(now int64, proven bool) *flights[V] {
	f := c.flights.Load()
	if proven || now-f.born <= int64(c.o.MaxStaleness) {
		return f
	}
	if nf := newFlights[V](now); c.flights.CompareAndSwap(f, nf) {
		return nf
	}
	return c.flights.Load()
}

// flight runs fn once for all concurrent callers of key in g (see
// group.go). fn runs on a context that keeps ctx's values but not its
// cancellation, so that one caller leaving does not fail the others.
//
// A caller whose ctx can be cancelled waits on its own ctx and may leave
// early, so when it leads, the flight runs on a goroutine of its own. A
// caller whose ctx can never be cancelled (ctx.Done() == nil) has no reason
// to leave, so when it leads it runs the flight on its own goroutine, which
// saves a goroutine hand-off (measured in docs/benchmarks.md). Both kinds
// join the same flights.
//
// It counts the caller's read (Stats counts reads, not flights) and returns
// where the answer came from and whether the caller joined a flight another
// caller led (shared), for its span.
func (c *Cache[V]) flight(ctx context.Context, g *group[V], key string, fn func(context.Context) outcome[V]) (V, Origin, bool, error) {
	cl, lead := g.join(key)
	if lead {
		if ctx.Done() == nil {
			c.lead(ctx, g, key, cl, fn)
		} else {
			go c.lead(ctx, g, key, cl, fn)
		}
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		c.stats.misses.Add(1)
		var zero V
		return zero, OriginNone, !lead, ctx.Err()
	}
	c.stats.read(cl.from, cl.miss, cl.err)
	if cl.stale != nil {
		c.servedStale(ctx, key, cl.stale)
	}
	return cl.v, cl.from, !lead, cl.err
}

// lead runs fn for cl, the flight of key in g that the caller leads, and
// finishes it whatever happens: a closed cache finishes it with ErrClosed,
// and a goroutine that exits inside fn with errAbandoned.
func (c *Cache[V]) lead(ctx context.Context, g *group[V], key string, cl *call[V], fn func(context.Context) outcome[V]) {
	o := outcome[V]{err: errAbandoned}
	defer func() { g.finish(key, cl, o) }()
	if !c.enter() {
		o.err = ErrClosed
		return
	}
	defer c.running.Done()
	o = fn(context.WithoutCancel(ctx))
}
