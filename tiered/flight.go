package tiered

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tieredcache/tiered/l1"
	"github.com/tieredcache/tiered/l2"
	"github.com/tieredcache/tiered/pubsub"
)

// This file is the miss path: what one flight does for all the callers of a
// key in this process.

// Lease waiting: a flight that finds another node's lease waits for a wake
// message from the holder, or polls Redis with a backoff between these bounds
// in case the message is lost.
const (
	pollMin = 10 * time.Millisecond
	pollMax = 200 * time.Millisecond
)

// readL2 is a flight's read of key from Redis, once Redis may be read
// (l2Ready). It takes the fill ticket first, then checks the outbox (a
// write queued after the check advances the key's guard, and the fill is
// refused). A read that validSince rejects is tried again, at most twice.
// It returns the ticket, the epoch the read began in, and raw or an error:
// errPending, errNotSynced, errBreakerOpen, errChanged, or the Store's.
func (c *Cache[V]) readL2(ctx context.Context, key string) (l1.Ticket, epoch, []byte, error) {
	for attempt := 0; ; attempt++ {
		ready := c.l2Ready(ctx) // may wait for the bus: the read begins after it
		t, e := c.begin(key), c.epoch()
		if c.bus.Pending(c.o.Namespace, key) {
			return t, e, nil, errPending
		}
		if ready != nil {
			return t, e, nil, ready
		}
		raw, err := c.l2.Get(ctx, key)
		c.l2Done("get", err)
		if c.validSince(ctx, e) {
			return t, e, raw, err
		}
		if attempt == 2 {
			return t, e, nil, errChanged
		}
	}
}

// fetch is the flight of Get: L1 again, then Redis.
func (c *Cache[V]) fetch(ctx context.Context, key string) outcome[V] {
	if e, ok := c.recheckL1(key); ok {
		return e.outcome()
	}
	t, _, raw, err := c.readL2(ctx, key)
	switch {
	case errors.Is(err, l2.ErrMiss):
		return outcome[V]{err: ErrNotFound, from: OriginRedis, miss: true}
	case err != nil:
		return outcome[V]{err: wrap(err, ErrUnavailable)}
	}
	if o, _, ok := c.hit(ctx, t, key, raw); ok {
		return o
	}
	return outcome[V]{err: ErrNotFound, from: OriginRedis, miss: true}
}

// found is a value read from Redis and decoded.
type found[V any] struct {
	e   *entry[V] // the value, decoded straight into what L1 will hold
	env l2.Envelope
	raw []byte
}

// decode decodes raw, read from Redis for key. If raw does not decode, it
// counts it, deletes it from Redis (only if unchanged) and reports false:
// the caller treats it as a miss. The value is decoded into a new L1
// entry, so that a hit allocates once for both the codec and L1.
func (c *Cache[V]) decode(ctx context.Context, key string, raw []byte) (f found[V], ok bool) {
	env, err := l2.DecodeEnvelope(raw)
	f.e = new(entry[V])
	if err == nil && !env.Negative {
		if uerr := c.o.Codec.Unmarshal(env.Payload, &f.e.v); uerr != nil {
			err = fmt.Errorf("%w: codec: %w", l2.ErrCorrupt, uerr)
		}
	}
	if err != nil {
		c.stats.corrupt.Add(1)
		c.log.Log(slog.LevelError, "tiered: corrupt value in redis, deleting it", err,
			slog.String("namespace", c.o.Namespace), slog.String("key", key))
		_, derr := c.l2.DeleteIfEqual(ctx, key, raw)
		c.l2Done("delete corrupt", derr)
		return found[V]{}, false
	}
	f.env, f.raw = env, raw
	return f, true
}

// hit decodes raw, read from Redis for key, and, if it has not expired,
// fills L1 and returns it (ok). It also returns what it decoded: with ok,
// f.env tells whether the value is due for a refresh (refreshIfDue); without,
// f is the expired value (a fail-safe candidate: staleCandidate), or the
// zero found if raw was corrupt (see decode).
func (c *Cache[V]) hit(ctx context.Context, t l1.Ticket, key string, raw []byte) (o outcome[V], f found[V], ok bool) {
	if f, ok = c.decode(ctx, key, raw); !ok {
		return o, f, false
	}
	if f.env.Expired(time.Now()) {
		return o, f, false
	}
	f.e.meta = metaOf(f.env)
	c.fillEntry(t, key, f.e, len(raw), time.Until(f.env.Expiry))
	if f.env.Negative {
		return outcome[V]{err: ErrNotFound, from: OriginRedis}, f, true
	}
	return outcome[V]{v: f.e.v, from: OriginRedis}, f, true
}

// load is the flight of GetOrLoad: L1 again, Redis, then the lease and the
// loader. A key whose invalidation is pending in the outbox goes straight
// to the loader and is cached nowhere; so does every key while Redis may
// not be read (see l2Ready), except that L1 takes the value then.
func (c *Cache[V]) load(ctx context.Context, key string, loader Loader[V]) outcome[V] {
	if e, ok := c.recheckL1(key); ok {
		return e.outcome()
	}
	t, e, raw, err := c.readL2(ctx, key)
	var stale *found[V]
	switch {
	case errors.Is(err, errPending):
		return c.callLoader(ctx, key, loader).outcome()
	case err == nil:
		o, f, ok := c.hit(ctx, t, key, raw)
		if ok {
			c.refreshIfDue(ctx, key, f.env, loader)
			return o
		}
		stale = c.staleCandidate(f)
	case !errors.Is(err, l2.ErrMiss):
		return c.loadUnleased(ctx, t, key, loader, nil)
	}
	return c.loadLeased(ctx, t, e, key, loader, stale)
}

// loadLeased takes the key's lease and loads, or waits for the node that
// holds it. See package l2 for the protocol. e is the epoch the flight's
// read began in; stale an expired value fail-safe may serve, or nil.
func (c *Cache[V]) loadLeased(ctx context.Context, t l1.Ticket, e epoch, key string, loader Loader[V], stale *found[V]) outcome[V] {
	woken := c.addWaiter(key)
	defer c.removeWaiter(key, woken)
	// A holder that neither fills nor releases lets its lease expire after
	// LeaseTTL, and the next GetOrLease takes it over; this deadline only
	// guards against a lease that keeps being renewed by others.
	start := time.Now()
	deadline := start.Add(2*c.o.LeaseTTL + c.o.LoadTimeout)
	poll, waited, corrupt := c.pollMin, false, 0
	for {
		res, err := c.l2.GetOrLease(ctx, key, c.o.LeaseTTL, time.Now())
		c.l2Done("get-or-lease", err)
		if err != nil {
			return c.loadUnleased(ctx, t, key, loader, stale)
		}
		if res.Stale != nil { // the latest expired value
			if f, ok := c.decode(ctx, key, res.Stale); ok {
				stale = c.staleCandidate(f)
			}
		}
		if stale != nil && c.o.SoftTimeout > 0 {
			deadline = start.Add(c.o.SoftTimeout) // see loadAndFill
		}
		switch res.State {
		case l2.Found:
			if !c.validSince(ctx, e) { // the value may come from a restarted server
				return c.loadUnleased(ctx, t, key, loader, stale)
			}
			if o, _, ok := c.hit(ctx, t, key, res.Value); ok {
				return o
			}
			if corrupt++; corrupt > 1 {
				return c.loadUnleased(ctx, t, key, loader, stale)
			}
			continue
		case l2.Acquired:
			return c.loadAndFill(ctx, t, e, key, loader, res.Lease, stale)
		case l2.Uncacheable:
			return c.loadUnleased(ctx, t, key, loader, stale)
		}
		// Held by another node: wait for its wake message, or poll.
		if !waited {
			waited = true
			c.stats.leaseWaits.Add(1)
		}
		left := time.Until(deadline)
		if left <= 0 {
			if stale != nil && c.o.SoftTimeout > 0 {
				return c.serveStale(ctx, t, key, stale, fmt.Errorf("%w: another node's load of the key ran past %v", ErrSoftTimeout, c.o.SoftTimeout))
			}
			return c.loadUnleased(ctx, t, key, loader, stale)
		}
		timer := time.NewTimer(min(poll, res.Remaining+time.Millisecond, left))
		select {
		case <-woken:
		case <-timer.C:
		case <-c.closing:
			timer.Stop()
			return outcome[V]{err: ErrClosed}
		}
		timer.Stop()
		poll = min(2*poll, c.pollMax)
	}
}

// loadAndFill calls the loader while holding lease and stores the result
// (see fillLoaded). If stale is set and Options.SoftTimeout is on, the
// callers get stale once the load has run for SoftTimeout, and the load
// goes on in the background, holding the lease; its result lands in both
// tiers as usual.
func (c *Cache[V]) loadAndFill(ctx context.Context, t l1.Ticket, e epoch, key string, loader Loader[V], lease l2.Lease, stale *found[V]) outcome[V] {
	if stale == nil || c.o.SoftTimeout <= 0 {
		return c.fillLoaded(ctx, t, e, key, lease, stale, c.callLoader(ctx, key, loader))
	}
	ch := make(chan outcome[V], 1)
	c.running.Add(1) // the caller is a running flight: the count is > 0
	go func() {
		defer c.running.Done()
		ch <- c.fillLoaded(ctx, t, e, key, lease, stale, c.callLoader(ctx, key, loader))
	}()
	timer := time.NewTimer(c.o.SoftTimeout)
	defer timer.Stop()
	select {
	case o := <-ch:
		return o
	case <-timer.C:
		return c.serveStale(ctx, t, key, stale, fmt.Errorf("%w: the load ran past %v", ErrSoftTimeout, c.o.SoftTimeout))
	}
}

// fillLoaded stores r, what the loader returned while this node held
// lease, in Redis (if the lease still holds) and in L1 (if the guard
// allows), and returns it to the callers, or stale instead if the load
// failed (fail-safe). A load during which the bus reset or the client
// reconnected does not write Redis: the reset may stand for a write this
// node never heard of, and a restarted server may have come back with the
// lease this node had taken before a write deleted it. A value too large to
// cache marks the lease uncacheable, so that the nodes waiting for it load
// at once, in parallel, instead of taking the lease one after another.
func (c *Cache[V]) fillLoaded(ctx context.Context, t l1.Ticket, e epoch, key string, lease l2.Lease, stale *found[V], r loaded[V]) outcome[V] {
	o := r.outcome()
	// The bus does not deliver a node's own messages: wake the flights of
	// this process that wait for this lease (a flight started after a write
	// of key, see written) directly, once the lease is filled or released.
	defer c.wake(key)
	neg := errors.Is(r.err, ErrNotFound)
	// announce fails only for an invalid key; an empty Announce then
	// leaves the other nodes' waiters to their polling.
	wake, _ := c.announce(pubsub.Wake, key)
	release := func() outcome[V] {
		c.l2Done("release", c.l2.Release(ctx, lease, wake))
		return o
	}
	if r.err != nil && !neg {
		release()
		if stale != nil && !errors.Is(r.err, ErrPassThrough) {
			return c.serveStale(ctx, t, key, stale, r.err)
		}
		return o
	}
	if (neg && c.o.NegativeTTL < 0) || r.untracked {
		return release()
	}
	if !c.validSince(ctx, e) || c.bus.Pending(c.o.Namespace, key) {
		c.stats.staleDiscards.Add(1)
		return release()
	}
	s, eerr := c.encode(r.v, neg, r.ttl)
	if eerr != nil {
		c.log.Log(slog.LevelWarn, "tiered: loaded value not cached", eerr,
			slog.String("namespace", c.o.Namespace), slog.String("key", key))
		if errors.Is(eerr, ErrValueTooLarge) {
			c.l2Done("mark uncacheable", c.l2.MarkUncacheable(ctx, lease, c.o.LeaseTTL, wake))
			return o
		}
		return release()
	}
	filled, ferr := c.l2.Fill(ctx, lease, s.env, s.redisTTL, wake)
	c.l2Done("fill", ferr)
	switch {
	case ferr != nil:
	case !filled:
		// The lease is gone: a Set or Delete of key ran while we loaded (or
		// the lease expired and another node took over). What we loaded may
		// predate that write: keep it out of both tiers. The callers still
		// get it: their read began before the write.
		c.stats.staleDiscards.Add(1)
		return o
	}
	o.v = s.v // what the other nodes decode
	c.fill(t, key, s.v, s.meta(), len(s.env), s.ttl)
	return o
}

// loadUnleased calls the loader without a lease, when Redis failed or a
// lease could not be had in time. The value goes to L1 (guarded) but not to
// Redis: only a lease holder may write a loaded value there. If the load
// fails, stale, if set, is served instead (fail-safe).
func (c *Cache[V]) loadUnleased(ctx context.Context, t l1.Ticket, key string, loader Loader[V], stale *found[V]) outcome[V] {
	r := c.callLoader(ctx, key, loader)
	neg := errors.Is(r.err, ErrNotFound)
	switch {
	case r.err != nil && !neg && stale != nil && !errors.Is(r.err, ErrPassThrough):
		return c.serveStale(ctx, t, key, stale, r.err)
	case c.l1 == nil || r.untracked:
	case r.err == nil:
		if s, eerr := c.encode(r.v, false, r.ttl); eerr == nil {
			r.v = s.v // what the other nodes decode
			c.fill(t, key, s.v, s.meta(), len(s.env), s.ttl)
		}
	case neg && c.o.NegativeTTL > 0:
		var zero V
		c.fill(t, key, zero, metaOf(l2.Envelope{Negative: true}), l2.HeaderSize, c.negativeTTL(r.ttl))
	}
	return r.outcome()
}

// callLoader runs loader for key (see runLoader).
func (c *Cache[V]) callLoader(ctx context.Context, key string, loader Loader[V]) loaded[V] {
	return c.runLoader(ctx, OpLoad, []string{key}, func(lctx context.Context) (V, error) { return loader.Load(lctx, key) })
}
