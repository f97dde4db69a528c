package tiered

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tieredcache/tiered/l2"
	"github.com/tieredcache/tiered/pubsub"
)

// This file is the write path: Set and Delete, their Redis call bounded by
// WriteTimeout, and the outbox that takes their invalidation when Redis
// does not answer (write).

// Set stores v for key in Redis, then in this process's L1, and has every
// other node drop key from its L1. A load of key in flight anywhere is
// discarded rather than written after v.
//
// The Redis call is bounded by ctx and Options.WriteTimeout, not by
// OpTimeout: a paused server is waited out. If it fails, whether it
// reached Redis is unknown, so Set drops key from the local L1, lets no
// later caller join a load of key already running, and queues key's
// invalidation in the bus's outbox (see Delete). It then returns an error
// wrapping ErrUnavailable: one that also wraps ErrQueued if the outbox has
// not delivered the invalidation by the deadline; v was not stored.
func (c *Cache[V]) Set(ctx context.Context, key string, v V) error {
	if reserved(key) {
		c.stats.rejected.Add(1)
		return ErrKeyReserved
	}
	return c.runWrite(ctx, OpSet, key, 1, func(ctx context.Context) error { return c.set(ctx, key, v, 0) })
}

// SetWithTTL is Set with a TTL of its own for this value instead of
// Options.TTL. ttl must be > 0 and at most Options.MaxTTL; otherwise it
// returns an error wrapping ErrInvalidTTL and writes nothing. Jitter and
// Fresh scale with ttl (see Options.MaxTTL).
func (c *Cache[V]) SetWithTTL(ctx context.Context, key string, v V, ttl time.Duration) error {
	if ttl <= 0 || ttl > c.o.MaxTTL {
		c.stats.rejected.Add(1)
		return fmt.Errorf("%w: %v, want > 0 and ≤ MaxTTL %v", ErrInvalidTTL, ttl, c.o.MaxTTL)
	}
	if reserved(key) {
		c.stats.rejected.Add(1)
		return ErrKeyReserved
	}
	return c.runWrite(ctx, OpSet, key, 1, func(ctx context.Context) error { return c.set(ctx, key, v, ttl) })
}

func (c *Cache[V]) set(ctx context.Context, key string, v V, ttl time.Duration) error {
	if err := c.checkKey(key); err != nil {
		return err
	}
	s, err := c.encode(v, false, ttl)
	if err != nil {
		return err
	}
	t := c.begin(key)
	ann, err := c.announce(pubsub.Invalidate, key)
	if err != nil {
		return err
	}
	keys := []string{key}
	delivered, cause := c.write(ctx, "set", keys, func(wctx context.Context) error {
		return c.l2.Set(wctx, key, s.env, s.redisTTL, ann)
	})
	switch {
	case cause == nil:
		if c.l1 != nil {
			c.l1.Replace(t, key, newEntry(s.v, s.meta()), int64(len(s.env)), min(c.o.L1TTL, s.ttl))
		}
		c.written(key)
		return nil
	case delivered:
		return wrap(cause, ErrUnavailable)
	}
	return wrap(cause, ErrQueued, ErrUnavailable)
}

// Delete deletes keys from Redis, then from this process's L1, and has every
// other node drop them from its L1, with one message for the whole batch. A
// load of any of them in flight anywhere is discarded.
//
// If any key is invalid nothing is deleted. The Redis call is bounded by
// ctx and Options.WriteTimeout. If it fails, the keys' invalidation goes to
// the bus's outbox, which retries it with backoff until Redis answers;
// until it is delivered this node serves the keys from neither L1 nor
// Redis. Delete waits for the delivery within the same deadline (not when
// the breaker is open: Redis is known to be down) and returns nil if it
// happened; otherwise an error wrapping ErrQueued and ErrUnavailable, and
// the outbox goes on. A write that reached Redis but
// lost its reply is harmless to deliver again.
func (c *Cache[V]) Delete(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		if reserved(k) {
			c.stats.rejected.Add(1)
			return ErrKeyReserved
		}
	}
	return c.tracedDelete(ctx, keys)
}

// tracedDelete is delete in a span of OpDelete, when the cache has a Tracer.
func (c *Cache[V]) tracedDelete(ctx context.Context, keys []string) error {
	key := ""
	if len(keys) == 1 {
		key = keys[0]
	}
	return c.runWrite(ctx, OpDelete, key, len(keys), func(ctx context.Context) error { return c.delete(ctx, keys...) })
}

func (c *Cache[V]) delete(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		if err := c.checkKey(k); err != nil {
			return err
		}
	}
	if len(keys) == 0 {
		return nil
	}
	ann, err := c.announce(pubsub.Invalidate, keys...)
	if err != nil {
		return err
	}
	delivered, cause := c.write(ctx, "delete", keys, func(wctx context.Context) error {
		return c.l2.Delete(wctx, keys, ann)
	})
	switch {
	case cause == nil:
		c.dropL1(keys...)
		c.written(keys...)
		return nil
	case delivered: // write dropped and forgot the keys when it queued them
		return nil
	}
	return wrap(cause, ErrQueued, ErrUnavailable)
}

// Causes wrapped in ErrUnavailable when no Redis call was made.
var (
	errBreakerOpen = errors.New("tiered: breaker open: redis failed repeatedly")
	errNotSynced   = errors.New("tiered: bus not subscribed or server not checked yet")
	errPending     = errors.New("tiered: the key's invalidation is pending in the outbox")
)

// errAnnounce wraps the bus's refusal to encode a write's message.
var errAnnounce = errors.New("tiered: cannot encode announcement")

// write runs do, the Redis side of a Set or Delete of keys, with the
// deadline of ctx and WriteTimeout, unless the breaker is open. If that
// fails (cause != nil), it queues the keys' invalidation in the outbox,
// drops them from L1, forgets their flights, and waits for the delivery
// within the same deadline (delivered), except when the breaker is open.
func (c *Cache[V]) write(ctx context.Context, op string, keys []string, do func(context.Context) error) (delivered bool, cause error) {
	wctx, cancel := context.WithTimeout(ctx, c.o.WriteTimeout)
	defer cancel()
	if c.brk.allow() {
		cause = do(wctx)
		if c.l2Done(op, cause); cause == nil {
			return false, nil
		}
	} else {
		c.stats.breakerSkips.Add(1)
		cause = errBreakerOpen
	}
	c.stats.queued.Add(uint64(len(keys)))
	c.bus.Queue(c.o.Namespace, keys, time.Now().Add(c.copiesOutlive()))
	c.dropL1(keys...)
	c.written(keys...)
	if errors.Is(cause, errBreakerOpen) {
		return false, cause // Redis is known to be down: do not wait for it
	}
	return c.bus.WaitDelivered(wctx, c.o.Namespace, keys) == nil, cause
}

// copiesOutlive bounds how long a copy of a key written before now can
// live: a value in Redis, or one a load that began before now fills into
// Redis or L1 after it. An outbox entry older than that has nothing left
// to invalidate.
func (c *Cache[V]) copiesOutlive() time.Duration {
	return c.o.LoadTimeout + c.o.LeaseTTL + max(c.o.MaxTTL+c.scaled(max(c.o.Jitter, 0), c.o.MaxTTL)+c.o.MaxStale, c.o.NegativeTTL)
}

func (c *Cache[V]) announce(kind pubsub.Kind, keys ...string) (l2.Announce, error) {
	msgs, err := c.bus.Encode(kind, c.o.Namespace, keys)
	if err != nil {
		return l2.Announce{}, wrap(err, errAnnounce)
	}
	return l2.Announce{Channel: c.bus.Channel(), Messages: msgs, Sharded: c.bus.Sharded()}, nil
}

// written is called after keys were written or deleted (here or, through
// the bus, on another node). Flights of keys that are in progress began
// before the write and may return what was there before it: forget them, so
// that a caller arriving after the write starts a flight of its own instead
// of joining one of those. And wake flights waiting for a lease of keys: the
// write deleted it.
func (c *Cache[V]) written(keys ...string) {
	f := c.flights.Load()
	for _, k := range keys {
		f.loads.forget(k)
		f.fetches.forget(k)
	}
	c.wake(keys...)
}

// dropL1 invalidates keys in L1, if there is one.
func (c *Cache[V]) dropL1(keys ...string) {
	if c.l1 != nil {
		c.l1.Invalidate(keys...)
	}
}

// runWrite runs do, a write (an operation that returns only an error: Set,
// Delete, InvalidateTags, Clear), counted as running so that Shutdown waits
// for it (or it returns ErrClosed), in a span of op when the cache has a
// Tracer.
func (c *Cache[V]) runWrite(ctx context.Context, op Op, key string, keys int, do func(context.Context) error) error {
	if !c.enter() {
		return ErrClosed
	}
	defer c.running.Done()
	if c.o.Tracer == nil {
		return do(ctx)
	}
	ctx, end := c.startSpan(ctx, op, key, keys)
	err := do(ctx)
	end(SpanEnd{Err: err})
	return err
}
