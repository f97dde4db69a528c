package tiered

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tieredcache/tiered/internal/mono"
	"github.com/tieredcache/tiered/l1"
	"github.com/tieredcache/tiered/l2"
	"github.com/tieredcache/tiered/pubsub"
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

// batch is one batch of flights: the keys a GetMany or GetManyCached leads.
type batch[V any] struct {
	c      *Cache[V]
	loader BulkLoader[V] // nil for GetManyCached
	items  []item[V]
	e      epoch // when the batch's Redis read began
}

// item is one key of a batch. Its outcome is written straight into its
// flight (cl), which no one reads before finishMany.
type item[V any] struct {
	key  string
	cl   *call[V]
	t    l1.Ticket
	done bool // cl holds the final outcome
	// how the key is to be loaded, once the batch knows
	lease    l2.Lease  // held: load and fill Redis
	unleased bool      // load, fill L1 only
	pending  bool      // load, cache nowhere (its invalidation is in the outbox)
	wait     bool      // another node holds the lease: wait as GetOrLoad does
	stale    *found[V] // an expired value fail-safe may serve, or nil
	readErr  error     // this key's read of Redis failed (the others' did not)
}

func (it *item[V]) finish(o outcome[V]) {
	it.cl.v, it.cl.err, it.cl.stale, it.cl.from, it.cl.miss = o.v, o.err, o.stale, o.from, o.miss
	it.done = true
}

// run is the miss path of a batch: L1 again, one read of Redis, one
// pipeline of leases, one BulkLoad, one pipeline of fills.
func (b *batch[V]) run(ctx context.Context) {
	// Unlike a single flight, a batch does not look in L1 again: the
	// caller did so microseconds ago, and a second ristretto lookup per
	// key costs more than the rare Redis read it could save.
	raws, err := b.read(ctx)
	if err != nil {
		for i := range b.items {
			it := &b.items[i]
			switch {
			case it.done:
			case b.loader == nil:
				it.finish(outcome[V]{err: wrap(err, ErrUnavailable)})
			case !it.pending:
				it.unleased = true
			}
		}
		b.load(ctx)
		return
	}
	var found []int
	for i := range b.items {
		it := &b.items[i]
		switch {
		case it.done:
		case it.pending && b.loader == nil:
			it.finish(outcome[V]{err: wrap(errPending, ErrUnavailable)})
		case it.readErr != nil && b.loader == nil:
			it.finish(outcome[V]{err: wrap(it.readErr, ErrUnavailable)})
		case it.pending:
		case it.readErr != nil:
			it.unleased = true
		case raws[i] != nil:
			found = append(found, i)
		}
	}
	b.hits(ctx, raws, found)
	var misses []int
	for i := range b.items {
		it := &b.items[i]
		if it.done || it.pending || it.unleased {
			continue
		}
		if b.loader == nil {
			it.finish(outcome[V]{err: ErrNotFound, from: OriginRedis, miss: true})
			continue
		}
		misses = append(misses, i)
	}
	if b.loader == nil {
		return
	}
	b.lease(ctx, misses)
	b.load(ctx)
}

// minChunk is the fewest values a goroutine of hits decodes.
const minChunk = 16

// hits decodes the values read for the items at idx, fills L1 with them
// and finishes the items they answer; an expired one becomes the item's
// fail-safe candidate. Decoding is most of the time of a batch read
// (benchmarks.md), so on several cores a large batch is split among up to
// GOMAXPROCS goroutines of at least minChunk values each: the batch then
// takes less time than decoding its values one after another, for the same
// CPU.
func (b *batch[V]) hits(ctx context.Context, raws [][]byte, idx []int) {
	n := len(idx)
	w := min(runtime.GOMAXPROCS(0), n/minChunk)
	if w <= 1 {
		b.hitsOf(ctx, raws, idx)
		return
	}
	per := (n + w - 1) / w
	var wg sync.WaitGroup
	for lo := per; lo < n; lo += per {
		wg.Add(1)
		go func(part []int) {
			defer wg.Done()
			b.hitsOf(ctx, raws, part)
		}(idx[lo:min(lo+per, n)])
	}
	b.hitsOf(ctx, raws, idx[:per])
	wg.Wait()
}

func (b *batch[V]) hitsOf(ctx context.Context, raws [][]byte, idx []int) {
	c := b.c
	for _, i := range idx {
		it := &b.items[i]
		o, f, ok := c.hit(ctx, it.t, it.key, raws[i])
		if !ok {
			it.stale = c.staleCandidate(f)
			continue
		}
		it.finish(o)
		if b.loader != nil && f.env.RefreshDue(time.Now()) { // b.one allocates: only when due
			c.refreshIfDue(ctx, it.key, f.env, b.one())
		}
	}
}

// read takes every open item's fill ticket, then reads them from Redis in
// one round trip, once Redis may be read; it retries a read that validSince
// rejects, as readL2 does. Items whose invalidation is pending are marked
// and not read. raws is in item order, nil for a miss.
func (b *batch[V]) read(ctx context.Context) (raws [][]byte, err error) {
	c := b.c
	for attempt := 0; ; attempt++ {
		ready := c.l2Ready(ctx)
		b.e = c.epoch()
		var keys []string
		var idx []int
		for i := range b.items {
			it := &b.items[i]
			if it.done {
				continue
			}
			it.t = c.begin(it.key)
			if it.pending = c.bus.Pending(c.o.Namespace, it.key); !it.pending {
				keys, idx = append(keys, it.key), append(idx, i)
			}
		}
		if ready != nil {
			return nil, ready
		}
		if len(keys) == 0 {
			return make([][]byte, len(b.items)), nil
		}
		got, err := c.l2.GetMany(ctx, keys)
		c.l2Done("mget", err)
		if c.validSince(ctx, b.e) {
			each, all := entryErrs(err)
			if all != nil {
				return nil, all
			}
			raws = make([][]byte, len(b.items))
			for j, i := range idx {
				if each != nil && each[j] != nil {
					b.items[i].readErr = each[j]
					continue
				}
				raws[i] = got[j]
			}
			return raws, nil
		}
		if attempt == 2 {
			return nil, errChanged
		}
	}
}

// lease runs the lease script for the missed items in one pipeline and
// marks what each is to do.
func (b *batch[V]) lease(ctx context.Context, misses []int) {
	c := b.c
	if len(misses) == 0 {
		return
	}
	keys := make([]string, len(misses))
	for j, i := range misses {
		keys[j] = b.items[i].key
	}
	results, err := c.l2.GetOrLeaseMany(ctx, keys, c.o.LeaseTTL, time.Now())
	c.l2Done("get-or-lease pipeline", err)
	each, all := entryErrs(err)
	for j, i := range misses {
		it := &b.items[i]
		if all != nil || (each != nil && each[j] != nil) {
			it.unleased = true
			continue
		}
		r := results[j]
		if r.Stale != nil {
			if f, ok := c.decode(ctx, it.key, r.Stale); ok {
				it.stale = c.staleCandidate(f)
			}
		}
		switch r.State {
		case l2.Found:
			if c.validSince(ctx, b.e) {
				if o, _, ok := c.hit(ctx, it.t, it.key, r.Value); ok {
					it.finish(o)
					continue
				}
			}
			it.unleased = true
		case l2.Acquired:
			it.lease = r.Lease
		case l2.Held:
			it.wait = true
		default: // Uncacheable: the holder's value could not be cached
			it.unleased = true
		}
	}
}

// load loads the open items: one BulkLoad for those this node leads,
// leased or not, while the items another node leads are waited for (each
// as GetOrLoad waits, with a loader that calls BulkLoad for the one key).
// Then it stores what it loaded.
func (b *batch[V]) load(ctx context.Context) {
	c := b.c
	var waiting []int
	var keys []string
	var idx []int
	for i := range b.items {
		it := &b.items[i]
		switch {
		case it.done:
		case it.wait:
			waiting = append(waiting, i)
		default:
			keys, idx = append(keys, it.key), append(idx, i)
		}
	}
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		one := b.one()
		done := make(chan struct{}, len(waiting))
		for _, i := range waiting {
			go func(it *item[V]) {
				it.finish(c.loadLeased(ctx, it.t, b.e, it.key, one, it.stale))
				done <- struct{}{}
			}(&b.items[i])
		}
		for range waiting {
			<-done
		}
	}()
	defer func() { <-waited }()
	if len(keys) == 0 {
		return
	}
	var m map[string]V
	r := c.runLoader(ctx, OpLoadMany, keys, func(lctx context.Context) (V, error) {
		var err error
		m, err = b.loader.BulkLoad(lctx, keys)
		var zero V
		return zero, err
	})
	if r.err == nil && m == nil {
		m = map[string]V{}
	}
	b.store(ctx, idx, m, r)
}

// one returns a Loader of one key through the batch's BulkLoader, for the
// keys of the batch that are loaded alone: those another node leads, and
// refreshes.
func (b *batch[V]) one() Loader[V] { return bulkOne(b.loader) }

// bulkOne adapts l to a Loader of one key.
func bulkOne[V any](l BulkLoader[V]) Loader[V] {
	return LoaderFunc[V](func(ctx context.Context, key string) (V, error) {
		m, err := l.BulkLoad(ctx, []string{key})
		if err != nil {
			var zero V
			return zero, err
		}
		v, ok := m[key]
		if !ok {
			return v, ErrNotFound
		}
		return v, nil
	})
}

// store gives each loaded item its result and caches it: in Redis by one
// pipeline of lease compare-and-sets for the leased items (a write since
// the lease discards the fill, as in loadAndFill), and in L1 through the
// fill guard. An item whose value cannot be cached marks its lease
// uncacheable. r is the BulkLoad call's outcome; m its map, read only
// when r.err is nil (a loader that overran LoadTimeout may still write it).
func (b *batch[V]) store(ctx context.Context, idx []int, m map[string]V, r loaded[V]) {
	c := b.c
	type fill struct {
		i int
		s sealed[V]
	}
	var fills []fill
	var l2fills []l2.Fill
	var releases []l2.Lease
	var releaseWakes []l2.Announce
	var uncacheable, staleIdx []int
	valid := c.validSince(ctx, b.e)
	for _, i := range idx {
		it := &b.items[i]
		if r.err != nil {
			it.finish(outcome[V]{err: r.err, from: OriginLoader})
		} else if v, ok := m[it.key]; ok {
			it.finish(outcome[V]{v: v, from: OriginLoader})
		} else {
			it.finish(outcome[V]{err: ErrNotFound, from: OriginLoader})
		}
		neg := errors.Is(it.cl.err, ErrNotFound)
		leased := it.lease != (l2.Lease{})
		wake, _ := c.announce(pubsub.Wake, it.key)
		release := func() {
			if leased {
				releases, releaseWakes = append(releases, it.lease), append(releaseWakes, wake)
			}
		}
		if it.cl.err != nil && !neg && it.stale != nil && !errors.Is(it.cl.err, ErrPassThrough) {
			release()
			staleIdx = append(staleIdx, i)
			continue
		}
		if it.pending || r.untracked || (it.cl.err != nil && !neg) || (neg && c.o.NegativeTTL < 0) {
			release()
			continue
		}
		s, err := c.encode(it.cl.v, neg, r.ttl)
		if err == nil && !neg {
			it.cl.v = s.v // what the other nodes decode
		}
		if err != nil {
			c.log.Log(slog.LevelWarn, "tiered: loaded value not cached", err,
				slog.String("namespace", c.o.Namespace), slog.String("key", it.key))
			if leased && errors.Is(err, ErrValueTooLarge) {
				uncacheable = append(uncacheable, i)
			} else {
				release()
			}
			continue
		}
		if !leased {
			fills = append(fills, fill{i, s})
			continue
		}
		if !valid || c.bus.Pending(c.o.Namespace, it.key) {
			c.stats.staleDiscards.Add(1)
			release()
			continue
		}
		fills = append(fills, fill{i, s})
		l2fills = append(l2fills, l2.Fill{Lease: it.lease, Value: s.env, TTL: s.redisTTL, Wake: wake})
	}
	defer func() {
		for _, i := range idx {
			c.wake(b.items[i].key)
		}
	}()
	for _, i := range uncacheable {
		it := &b.items[i]
		wake, _ := c.announce(pubsub.Wake, it.key)
		c.l2Done("mark uncacheable", c.l2.MarkUncacheable(ctx, it.lease, c.o.LeaseTTL, wake))
	}
	if len(releases) > 0 {
		c.l2Done("release pipeline", c.l2.ReleaseMany(ctx, releases, releaseWakes))
	}
	for _, i := range staleIdx { // after the releases: fail-safe
		it := &b.items[i]
		it.finish(c.serveStale(ctx, it.t, it.key, it.stale, it.cl.err))
	}
	var filled []bool
	var all error
	var each []error
	if len(l2fills) > 0 {
		var err error
		filled, err = c.l2.FillMany(ctx, l2fills)
		c.l2Done("fill pipeline", err)
		each, all = entryErrs(err)
	}
	j := 0
	for _, f := range fills {
		it := &b.items[f.i]
		if it.lease != (l2.Lease{}) {
			// A fill that failed may or may not have been written: L1 takes
			// the value (guarded), as loadAndFill does; one that lost its
			// lease raced a write and is discarded.
			failed := all != nil || (each != nil && each[j] != nil)
			lost := !failed && !filled[j]
			j++
			if lost {
				c.stats.staleDiscards.Add(1)
				continue
			}
		}
		c.fill(it.t, it.key, it.cl.v, f.s.meta(), len(f.s.env), f.s.ttl)
	}
}

// entryErrs splits the error of an l2 batch call: each entry's error (nil
// entries succeeded) for an *l2.BatchError, else all, when the call failed
// as a whole (no results).
func entryErrs(err error) (each []error, all error) {
	var be *l2.BatchError
	if errors.As(err, &be) {
		return be.Errs, nil
	}
	return nil, err
}
