package tiered

import (
	"context"
	"errors"
	"time"

	"github.com/tieredcache/tiered/internal/mono"
	"github.com/tieredcache/tiered/l1"
)

// This file is the fill guard: a load that began before an invalidation of
// its key must not put what it read back into L1 (l1's tickets, taken by
// begin before the read) or into Redis (the epoch: resets, dials and purges
// seen since the read began; see validSince).

// begin returns the L1 ticket for a load of key; call it before reading.
func (c *Cache[V]) begin(key string) l1.Ticket {
	if c.l1 == nil {
		return l1.Ticket{}
	}
	return c.l1.Begin(key)
}

// fill stores an entry in L1 if no invalidation of key happened since t.
// The entry is built here, not by callers, so that nothing is allocated when
// L1 is off. ttl is further bounded by L1TTL.
func (c *Cache[V]) fill(t l1.Ticket, key string, v V, m meta, cost int, ttl time.Duration) {
	if c.l1 == nil {
		return
	}
	c.fillEntry(t, key, newEntry(v, m), cost, ttl)
}

// fillEntry is fill of an entry already built; L1 keeps e, which must not
// change afterwards.
func (c *Cache[V]) fillEntry(t l1.Ticket, key string, e *entry[V], cost int, ttl time.Duration) {
	if c.l1 == nil {
		return
	}
	if c.beforeFill != nil {
		c.beforeFill(key)
	}
	c.l1.Fill(t, key, e, int64(cost), min(c.o.L1TTL, ttl))
}

// recheckL1 looks in L1 again at the start of a flight: a flight that
// finished between this caller's L1 miss and the start of this one may have
// filled it (groupcache's reason).
func (c *Cache[V]) recheckL1(key string) (*entry[V], bool) {
	now := mono.Now()
	return c.fromL1(key, now, c.bus.Proven(now))
}

// epoch is what a flight remembers of the cache when it begins reading:
// the bus's resets, the client's connections and the namespace's purges.
type epoch struct{ resets, dials, purges uint64 }

func (c *Cache[V]) epoch() epoch {
	return epoch{c.resets.Load(), c.dials.Load(), c.stats.purges.Load()}
}

// validSince reports whether what a flight read from Redis since e can be
// trusted: the bus has not reset (it may stand for a write this node never
// heard of), and if the client opened a connection meanwhile (it may reach
// a server that restarted with old data), the server check that follows
// has passed without purging the namespace. It waits for that check at
// most OpTimeout.
func (c *Cache[V]) validSince(ctx context.Context, e epoch) bool {
	if c.resets.Load() != e.resets {
		return false
	}
	if c.dials.Load() != e.dials && !c.waitSynced(ctx) {
		return false
	}
	return c.stats.purges.Load() == e.purges && c.resets.Load() == e.resets
}

// errChanged is a read discarded because Redis may have changed under it
// (see validSince).
var errChanged = errors.New("tiered: redis may have restarted during the read")
