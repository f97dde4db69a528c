package tiered

import (
	"context"
	"errors"
	"fmt"
)

// This file invalidates groups of entries: Clear drops the whole
// namespace.

// Clear drops every entry of the cache's namespace, from Redis and from
// every node's L1 (a Flush message makes each node drop its L1 and start a
// new generation of flights). Loads that began before it do not put their
// values back: the purge deletes their leases first, so their fills fail,
// and the fill guard keeps them out of L1. A value written by a Set while
// Clear runs may survive it, as it would if written just after.
//
// Like Delete, Clear never gives up: if Redis fails within ctx and
// Options.WriteTimeout, the purge is queued in the bus's outbox, this node
// drops its L1 and serves the namespace from the loader only until the
// purge is delivered, and Clear returns an error wrapping ErrQueued and
// ErrUnavailable. Its cost is a SCAN of the Redis keyspace (every master of
// a Cluster): use it for rare events (a migration, a bad deploy), and Delete
// or InvalidateTags for routine ones.
func (c *Cache[V]) Clear(ctx context.Context) error {
	if c.closed.Load() {
		return ErrClosed
	}
	wctx, cancel := context.WithTimeout(ctx, c.o.WriteTimeout)
	defer cancel()
	var cause error
	if c.brk.allow() {
		if cause = (busHandler[V]{c}).Purge(wctx); cause == nil {
			return nil
		}
	} else {
		c.stats.breakerSkips.Add(1)
		cause = errBreakerOpen
	}
	c.stats.queued.Add(1)
	c.bus.QueuePurge(c.o.Namespace)
	busHandler[V]{c}.Reset()
	if !errors.Is(cause, errBreakerOpen) && c.bus.Flush(wctx, c.o.Namespace) == nil {
		return nil
	}
	return fmt.Errorf("%w: %w: %w", ErrQueued, ErrUnavailable, cause)
}
