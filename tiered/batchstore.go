package tiered

import (
	"context"
	"errors"
	"log/slog"

	"github.com/tieredcache/tiered/l2"
	"github.com/tieredcache/tiered/pubsub"
)

// This file stores what a batch loaded: one pipeline of fills, and the
// releases of what it may not store.

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
