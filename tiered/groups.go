package tiered

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/tieredcache/tiered/l2"
)

// This file invalidates groups of entries: InvalidateTags drops the entries
// that carry a tag, Clear the whole namespace.
//
// Tags are Redis sorted sets of keys (package l2, tags.go): a load records its key
// in the set of each of its tags before it reads the source (AddTags), and
// InvalidateTags reads the sets and deletes their keys as Delete does, so
// every node's L1 drops them through the usual invalidation messages. A
// read never looks at tags. We chose this over tag versions checked on
// every read (FusionCache's way) because reads are the hot path here: an
// L1 hit must stay one lookup. The price is on the loads (one more round
// trip per tagged load) and on InvalidateTags (proportional to the keys of
// the tag); docs/design.md has the figures.

// errNoLoad is AddTags called with a context that no load gave.
var errNoLoad = errors.New("tiered: AddTags called outside a Loader or BulkLoader (pass the ctx the cache gave the loader)")

// AddTags tags the result of the running load: an InvalidateTags of any of
// tags drops it, from Redis and from every node's L1. Call it from a Loader
// or BulkLoader, with the context the cache passed in, before the loader
// reads the source: the tags are recorded in Redis at once, so that an
// invalidation that comes while the loader reads is not missed. In a
// BulkLoad the tags apply to every key of the call.
//
// If the tags cannot be recorded (Redis fails, a tag is empty or longer
// than Options.MaxKeyBytes), AddTags returns the error, and the load's
// result is still returned to its callers but cached nowhere: an
// invalidation of the tags would miss it. Called outside a load, AddTags
// returns an error and records nothing.
func AddTags(ctx context.Context, tags ...string) error {
	st, ok := ctx.Value(loadKey{}).(*loadState)
	if !ok || st.addTags == nil {
		return errNoLoad
	}
	if err := st.addTags(ctx, tags); err != nil {
		st.untracked.Store(true)
		return err
	}
	return nil
}

// addTags records keys under tags in Redis, for as long as a value of
// theirs written now may live.
func (c *Cache[V]) addTags(ctx context.Context, keys, tags []string) error {
	for _, t := range tags {
		if err := c.checkTag(t); err != nil {
			return err
		}
	}
	if !c.brk.allow() {
		c.stats.breakerSkips.Add(1)
		return wrap(errBreakerOpen, ErrUnavailable)
	}
	err := c.l2.AddTags(ctx, keys, tags, c.copiesOutlive())
	c.l2Done("add tags", err)
	if err != nil {
		return wrap(err, ErrUnavailable)
	}
	return nil
}

// checkTag validates a tag as checkKey does a key.
func (c *Cache[V]) checkTag(tag string) error {
	if tag == "" {
		c.stats.rejected.Add(1)
		return fmt.Errorf("%w: empty tag", ErrKeyEmpty)
	}
	if len(tag) > c.o.MaxKeyBytes {
		c.stats.rejected.Add(1)
		return fmt.Errorf("%w: tag of %d bytes, limit %d", ErrKeyTooLong, len(tag), c.o.MaxKeyBytes)
	}
	return nil
}

// tagChunk bounds the keys of one Delete of InvalidateTags.
const tagChunk = 1000

// InvalidateTags drops every entry that a load tagged with one of tags (see
// AddTags), from Redis and from every node's L1, as Delete of their keys
// would: loads of them in flight are discarded.
//
// It reads the tags' key sets, then deletes the keys. If Redis does not
// answer the read (or rejects it), which keys carry the tags is unknown,
// so the whole namespace is purged instead, as Clear does, through the
// outbox if need be: an invalidation is never lost, only made larger.
// Errors are those of Delete and Clear: an error wrapping ErrQueued means
// the invalidation is queued and this node reads through meanwhile.
// ErrKeyEmpty and ErrKeyTooLong reject a bad tag; ErrClosed.
func (c *Cache[V]) InvalidateTags(ctx context.Context, tags ...string) error {
	return c.runWrite(ctx, OpInvalidate, "", len(tags), func(ctx context.Context) error { return c.invalidateTags(ctx, tags) })
}

func (c *Cache[V]) invalidateTags(ctx context.Context, tags []string) error {
	if c.closed.Load() {
		return ErrClosed
	}
	for _, t := range tags {
		if err := c.checkTag(t); err != nil {
			return err
		}
	}
	if len(tags) == 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, c.o.WriteTimeout)
	defer cancel()
	var reads []l2.TagRead
	err := errBreakerOpen
	if c.brk.allow() {
		reads, err = c.l2.TagMembers(wctx, tags)
		c.l2Done("tag members", err)
	} else {
		c.stats.breakerSkips.Add(1)
	}
	if err != nil {
		c.log.Log(slog.LevelError, "tiered: cannot read the keys of the tags, purging the namespace instead", err,
			slog.String("namespace", c.o.Namespace))
		return c.purge(wctx)
	}
	seen := make(map[string]struct{})
	var keys []string
	for _, r := range reads {
		for _, k := range r.Members {
			if _, dup := seen[k]; !dup {
				seen[k] = struct{}{}
				keys = append(keys, k)
			}
		}
	}
	for len(keys) > 0 {
		n := min(len(keys), tagChunk)
		if err := c.delete(wctx, keys[:n]...); err != nil {
			return err // queued in the outbox: delivered when Redis answers
		}
		keys = keys[n:]
	}
	c.l2Done("untag", c.l2.RemoveTagMembers(wctx, tags, reads))
	return nil
}

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
	return c.runWrite(ctx, OpClear, "", 0, func(ctx context.Context) error {
		wctx, cancel := context.WithTimeout(ctx, c.o.WriteTimeout)
		defer cancel()
		return c.purge(wctx)
	})
}

// purge purges the namespace within wctx, unless the breaker is open, and
// else queues the purge in the outbox. After a failed read of tags it is
// still tried at once: the read had OpTimeout, while the purge has the rest
// of WriteTimeout and may wait out a paused server.
func (c *Cache[V]) purge(wctx context.Context) error {
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
	return wrap(cause, ErrQueued, ErrUnavailable)
}
