package tiered

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/tieredcache/tiered/internal/mono"
	"github.com/tieredcache/tiered/l2"
)

// This file is refresh-ahead (Options.Fresh): a value read after its
// refresh point is returned at once, and one background load per key per
// fleet replaces it before it expires, so that a hot key never makes its
// callers wait for the loader.
//
// The refresh point travels in the envelope (l2.Envelope.Fresh), so every
// node sees the same one. A node that reads a value past it asks Redis for
// the key's refresh lease (l2.Store.RefreshLease), naming the expiry of the
// value it holds:
//
//   - if Redis holds a newer value (another node refreshed it), the node
//     takes that one into L1 and loads nothing;
//   - if the lease is free, the node takes it, loads, and fills through the
//     same compare-and-set as a miss: a Set or Delete during the refresh
//     deletes the lease, and the refreshed value is discarded;
//   - if another node holds it, the node does nothing, and asks again no
//     sooner than the lease's remaining time (at most pollMax).
//
// In each process one refresh per key runs at a time (refreshes).

// meta is what an L1 entry knows besides its value.
type meta struct {
	neg     bool
	refresh int64     // mono time from which a read triggers a refresh; math.MaxInt64: never
	expiry  time.Time // the value's logical expiry (RefreshLease's "seen")
	stale   error     // set for an expired value kept after a failed load (see serveStale)
}

// metaOf returns the meta of an entry holding env's value.
func metaOf(env l2.Envelope) meta {
	m := meta{neg: env.Negative, expiry: env.Expiry, refresh: math.MaxInt64}
	if !env.Fresh.IsZero() {
		m.refresh = mono.Now() + int64(time.Until(env.Fresh))
	}
	return m
}

// refreshes is the set of keys this process is refreshing, or has found
// another node refreshing, with when it may try again.
type refreshes struct {
	mu    sync.Mutex
	until map[string]int64 // mono time; guarded by mu
}

// claim reports whether a refresh of key may start at now, and if so
// records it as running.
func (r *refreshes) claim(key string, now int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u, ok := r.until[key]; ok && now < u {
		return false
	}
	if r.until == nil {
		r.until = make(map[string]int64)
	}
	r.until[key] = math.MaxInt64
	return true
}

// done ends key's refresh; no other may start before until (mono time).
func (r *refreshes) done(key string, until int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if until <= mono.Now() {
		delete(r.until, key)
	} else {
		r.until[key] = until
	}
}

// l1Special handles an L1 hit on an entry that is due for a refresh or was
// served by fail-safe (the hit path checks both with one branch).
func (c *Cache[V]) l1Special(ctx context.Context, key string, e *entry[V], now int64, loader Loader[V]) {
	if e.stale != nil {
		c.servedStale(ctx, key, e.stale)
		return
	}
	if now >= e.refresh && !e.neg && loader != nil {
		c.refreshAhead(ctx, key, e.expiry, loader)
	}
}

// refreshIfDue starts a refresh of key if env, the envelope of a value
// just read from Redis (and decoded by hit), is past its refresh point.
func (c *Cache[V]) refreshIfDue(ctx context.Context, key string, env l2.Envelope, loader Loader[V]) {
	if c.o.Fresh <= 0 || env.Negative || !env.RefreshDue(time.Now()) {
		return
	}
	c.refreshAhead(ctx, key, env.Expiry, loader)
}

// refreshAhead refreshes key in the background, unless a refresh of it is
// running here or was found running elsewhere (see the file comment).
// seen is the logical expiry of the value the caller holds.
func (c *Cache[V]) refreshAhead(ctx context.Context, key string, seen time.Time, loader Loader[V]) {
	if !c.refreshing.claim(key, mono.Now()) {
		return
	}
	if !c.enter() {
		c.refreshing.done(key, 0)
		return
	}
	go func() {
		defer c.running.Done()
		ctx := context.WithoutCancel(ctx)
		if c.o.Tracer == nil {
			c.refreshing.done(key, c.refresh(ctx, key, seen, loader))
			return
		}
		ctx, end := c.startSpan(ctx, OpRefresh, key, 1)
		until := c.refresh(ctx, key, seen, loader)
		end(SpanEnd{})
		c.refreshing.done(key, until)
	}()
}

// refresh is one refresh of key; it returns when another may start (mono).
func (c *Cache[V]) refresh(ctx context.Context, key string, seen time.Time, loader Loader[V]) int64 {
	if c.l2Ready(ctx) != nil || c.bus.Pending(c.o.Namespace, key) {
		return mono.Now() + int64(c.pollMax)
	}
	t, e := c.begin(key), c.epoch()
	res, err := c.l2.RefreshLease(ctx, key, seen, c.o.LeaseTTL)
	c.l2Done("refresh lease", err)
	switch {
	case err != nil:
		return mono.Now() + int64(c.pollMax)
	case res.State == l2.Found: // refreshed by another node, or rewritten
		if c.validSince(ctx, e) {
			c.hit(ctx, t, key, res.Value)
		}
	case res.State == l2.Acquired:
		c.stats.refreshes.Add(1)
		c.fillLoaded(ctx, t, e, key, res.Lease, nil, c.callLoader(ctx, key, loader))
	case res.State == l2.Held:
		return mono.Now() + int64(min(res.Remaining, c.pollMax))
	}
	return 0
}
