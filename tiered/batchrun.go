package tiered

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/tieredcache/tiered/l1"
	"github.com/tieredcache/tiered/l2"
)

// This file runs one batch of GetMany flights: L1 and one MGET, one
// pipeline of leases, one BulkLoad call (see run).

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
