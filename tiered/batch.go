package tiered

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tieredcache/tiered/internal/mono"
)

// This file is the batch read: GetMany and GetManyCached. A batch joins the
// same per-key flights as GetOrLoad and Get (group.go), so a key is read
// and loaded once per process whichever call asks for it; the keys the
// batch leads go through each step of the miss path together, in one
// round trip per step: one MGET, one pipeline of lease scripts, one
// BulkLoad, one pipeline of fills.

// A BulkLoader loads many keys at once from the source of truth, for
// GetMany. BulkLoad returns the values it found; a key absent from the map
// does not exist, and that is cached like a Loader's ErrNotFound. An error
// fails every key of the call and is not cached. The context is as for
// Loader.Load (OverrideTTL sets the TTL of every key of the call).
type BulkLoader[V any] interface {
	BulkLoad(ctx context.Context, keys []string) (map[string]V, error)
}

// A BulkLoaderFunc implements BulkLoader with a function.
type BulkLoaderFunc[V any] func(ctx context.Context, keys []string) (map[string]V, error)

// BulkLoad calls f(ctx, keys).
func (f BulkLoaderFunc[V]) BulkLoad(ctx context.Context, keys []string) (map[string]V, error) {
	return f(ctx, keys)
}

// BatchError is the error of a GetMany or GetManyCached that failed for
// some keys; the values of the other keys are returned beside it. Each
// key's error is what GetOrLoad or Get would have returned for it alone.
// errors.Is sees through it to every key's error.
type BatchError struct {
	Errs map[string]error // by key
}

func (e *BatchError) Error() string {
	keys := slices.Sorted(maps.Keys(e.Errs))
	var b strings.Builder
	fmt.Fprintf(&b, "tiered: %d keys failed", len(keys))
	for i, k := range keys {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(keys)-i)
			break
		}
		fmt.Fprintf(&b, "; %q: %v", k, e.Errs[k])
	}
	return b.String()
}

// Unwrap returns every key's error.
func (e *BatchError) Unwrap() []error {
	keys := slices.Sorted(maps.Keys(e.Errs)) // a stable order
	errs := make([]error, len(keys))
	for i, k := range keys {
		errs[i] = e.Errs[k]
	}
	return errs
}

// GetMany returns the values of keys from L1, Redis, or loader, in that
// order, and caches what loader returns in both tiers: GetOrLoad for many
// keys, in one round trip per step instead of one per key.
//
// The result maps each key that has a value to it. A key that loader did
// not return, or that a cached "not found" says does not exist, is absent,
// which is not an error. Duplicate keys are read once.
//
// Each key joins the flight of any concurrent GetOrLoad or GetMany of it
// in this process, and the keys this call leads are read from Redis with
// one MGET (pipelined GETs on a Cluster client), leased with one pipeline,
// and loaded with one BulkLoad call; keys whose lease another node holds
// are waited for as GetOrLoad waits. If Redis fails, the keys go to
// loader, as with GetOrLoad.
//
// Errors: if some keys fail (an invalid key, a loader error, a panic), the
// values of the others are returned with a *BatchError that maps each
// failed key to its error. If ctx ends, the values found so far are
// returned with ctx's error. ErrClosed; ErrNilLoader.
func (c *Cache[V]) GetMany(ctx context.Context, keys []string, loader BulkLoader[V]) (map[string]V, error) {
	if loader == nil {
		return nil, ErrNilLoader
	}
	return c.many(ctx, keys, loader, true)
}

// GetManyCached is Get for many keys: L1, then one round trip to Redis for
// the rest; no loader. A key in neither tier is absent from the result,
// which is not an error. Keys that could not be read (Redis failed: an
// error wrapping ErrUnavailable) or are invalid are reported in a
// *BatchError beside the values of the others.
func (c *Cache[V]) GetManyCached(ctx context.Context, keys []string) (map[string]V, error) {
	return c.many(ctx, keys, nil, true)
}

// many is GetMany, or GetManyCached when loader is nil.
// shared is true for a call of the shared API, whose keys may not be
// scoped ones (see reserved).
func (c *Cache[V]) many(ctx context.Context, keys []string, loader BulkLoader[V], shared bool) (res map[string]V, err error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	op := OpGetManyCached
	if loader != nil {
		op = OpGetMany
	}
	var end func(SpanEnd) // the span, once started (see Options.Tracer)
	if c.o.Tracer != nil && c.o.TraceL1Hits {
		ctx, end = c.startSpan(ctx, op, "", len(keys))
		defer func() { end(SpanEnd{Err: err}) }()
	}
	res = make(map[string]V, len(keys))
	var errs map[string]error
	fail := func(k string, err error) {
		if errs == nil {
			errs = make(map[string]error)
		}
		errs[k] = err
	}
	now := mono.Now()
	proven := c.bus.Proven(now)
	f := c.flightsFor(now, proven)
	g := &f.fetches
	if loader != nil {
		g = &f.loads
	}
	var miss []string // valid keys that L1 did not answer
	for _, k := range keys {
		if shared && reserved(k) {
			c.stats.rejected.Add(1)
			fail(k, ErrKeyReserved)
			continue
		}
		if err := c.checkKey(k); err != nil {
			fail(k, err)
			continue
		}
		if e, ok := c.fromL1(k, now, proven); ok {
			c.stats.hits.add(e.neg)
			if now >= e.refresh || e.stale != nil { // rare: Fresh or MaxStale on
				var one Loader[V]
				if loader != nil {
					one = bulkOne(loader)
				}
				c.l1Special(ctx, k, e, now, one)
			}
			if !e.neg {
				res[k] = e.v
			}
			continue
		}
		miss = append(miss, k)
	}
	if len(miss) == 0 {
		return c.manyResult(res, errs)
	}
	if end == nil && c.o.Tracer != nil {
		ctx, end = c.startSpan(ctx, op, "", len(miss))
		defer func() { end(SpanEnd{Err: err}) }()
	}
	calls := make([]*call[V], len(miss))
	if led := g.joinMany(miss, calls); len(led) > 0 {
		ledKeys, ledCalls := make([]string, len(led)), make([]*call[V], len(led))
		for j, i := range led {
			ledKeys[j], ledCalls[j] = miss[i], calls[i]
		}
		if ctx.Done() == nil {
			c.leadBatch(ctx, g, ledKeys, ledCalls, loader)
		} else {
			go c.leadBatch(ctx, g, ledKeys, ledCalls, loader)
		}
	}
	for i, cl := range calls {
		select {
		case <-cl.done:
		case <-ctx.Done():
			c.stats.misses.Add(uint64(len(calls) - i)) // the reads it leaves
			return res, ctx.Err()
		}
		c.stats.read(cl.from, cl.miss, cl.err)
		switch k := miss[i]; {
		case cl.err == nil:
			res[k] = cl.v
			if cl.stale != nil {
				c.servedStale(ctx, k, cl.stale)
			}
		case errors.Is(cl.err, ErrNotFound):
		default:
			fail(k, cl.err)
		}
	}
	return c.manyResult(res, errs)
}

// manyResult returns a batch read's values and, if some keys failed, its
// *BatchError.
func (c *Cache[V]) manyResult(res map[string]V, errs map[string]error) (map[string]V, error) {
	if errs != nil {
		return res, &BatchError{Errs: errs}
	}
	return res, nil
}

// leadBatch runs the flights calls of keys in g, which the caller leads,
// as one batch, and finishes each, whatever happens (see lead).
func (c *Cache[V]) leadBatch(ctx context.Context, g *group[V], keys []string, calls []*call[V], loader BulkLoader[V]) {
	b := &batch[V]{c: c, loader: loader, items: make([]item[V], len(keys))}
	for i, k := range keys {
		b.items[i] = item[V]{key: k, cl: calls[i]}
		calls[i].err = errAbandoned // until the batch finishes it
	}
	defer g.finishMany(keys, calls)
	if !c.enter() {
		for i := range b.items {
			b.items[i].finish(outcome[V]{err: ErrClosed})
		}
		return
	}
	defer c.running.Done()
	b.run(context.WithoutCancel(ctx))
}
