package tiered

import (
	"context"
	"errors"
	"log/slog"

	"github.com/tieredcache/tiered/internal/mono"
	"github.com/tieredcache/tiered/l2"
	"github.com/tieredcache/tiered/pubsub"
)

// This file is the cache's side of the bus: what it does with each message
// of its namespace, and the outbox's deliveries of its invalidations.

// busHandler receives the bus messages of the cache's namespace.
type busHandler[V any] struct{ c *Cache[V] }

func (h busHandler[V]) Invalidate(keys []string) {
	h.c.stats.invalidations.Add(uint64(len(keys)))
	h.c.dropL1(keys...)
	h.c.written(keys...)
}

func (h busHandler[V]) Wake(keys []string) { h.c.wake(keys...) }

// Reset drops L1 and starts a new generation of flights: no caller after
// it joins a flight that began before it, and no load that began before it
// writes Redis.
func (h busHandler[V]) Reset() {
	c := h.c
	c.stats.resets.Add(1)
	c.resets.Add(1)
	c.flights.Store(newFlights[V](mono.Now()))
	if c.l1 != nil {
		c.l1.Clear()
	}
}

// Deliver is the outbox's delivery of keys: the delete script, as Delete
// runs it. If Redis rejects it for good (the keys can never be deleted one
// by one), the namespace is purged instead: an invalidation is never given
// up.
func (h busHandler[V]) Deliver(ctx context.Context, keys []string) error {
	c := h.c
	ann, err := c.announce(pubsub.Invalidate, keys...)
	if err == nil {
		err = c.l2.Delete(ctx, keys, ann)
		c.l2Done("outbox delivery", err)
	}
	if err != nil && (l2.Permanent(err) || !errors.Is(err, l2.ErrUnavailable)) {
		c.log.Log(slog.LevelError, "tiered: redis rejects the invalidation of keys, purging the namespace", err,
			slog.String("namespace", c.o.Namespace))
		err = h.Purge(ctx)
	}
	if err != nil {
		return err
	}
	c.stats.delivered.Add(uint64(len(keys)))
	c.dropL1(keys...)
	c.written(keys...)
	return nil
}

// Purge deletes the whole namespace from Redis and announces a Flush, which
// makes every other node reset this namespace; this node resets itself.
func (h busHandler[V]) Purge(ctx context.Context) error {
	c := h.c
	msgs, err := c.bus.Encode(pubsub.Flush, c.o.Namespace, nil)
	if err != nil {
		return err
	}
	err = c.l2.Purge(ctx, l2.Announce{Channel: c.bus.Channel(), Messages: msgs, Sharded: c.bus.Sharded()})
	c.l2Done("purge", err)
	if err != nil {
		return err
	}
	c.stats.purges.Add(1)
	h.Reset()
	return nil
}
