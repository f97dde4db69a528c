package tiered

import "sync/atomic"

// Stats are the counters of one [Cache] since New. L1 counters count calls;
// the others count flights (the work shared by concurrent callers of a key,
// see Cache.GetOrLoad), so L1Hits+L2Hits+Misses is less than the number of
// calls when callers share flights.
type Stats struct {
	L1Hits        uint64 // calls answered from L1 (NegativeHits included)
	L2Hits        uint64 // flights answered from Redis; one flight may answer many callers
	Misses        uint64 // flights that found the key in neither tier
	NegativeHits  uint64 // L1 calls and Redis flights answered by a cached "not found"
	Loads         uint64 // loader calls
	LoadErrors    uint64 // loader calls that failed (ErrNotFound is not a failure)
	LeaseWaits    uint64 // flights that waited for another node's lease
	StaleDiscards uint64 // loaded values kept out of Redis because a write raced them
	L2Errors      uint64 // failed Redis calls
	Corrupt       uint64 // values in Redis that did not decode (each deleted)
	Rejected      uint64 // rejected inputs: bad keys, values too large or not encodable
	Invalidations uint64 // keys invalidated by messages from other nodes
	Resets        uint64 // times L1 was dropped because the bus lost or regained its subscription
	Queued        uint64 // keys whose invalidation went to the outbox (the write returned ErrQueued or waited for it); Bus().Stats() counts the outbox's deliveries and drops
	Delivered     uint64 // outbox keys of this cache that the outbox delivered
	Purges        uint64 // times this cache purged its namespace from Redis (outbox overflow, a server that came back with old data; on a Cluster, one per master purged)
	L1Unproven    uint64 // reads that skipped L1 because the bus could not prove it fresh within MaxStaleness
	BreakerOpens  uint64 // times the breaker opened after consecutive Redis failures
	BreakerSkips  uint64 // Redis calls skipped because the breaker was open
	StaleServed   uint64 // calls answered with an expired value by fail-safe (Options.MaxStale)
	Refreshes     uint64 // refresh-ahead loads this node ran (Options.Fresh)
}

// counters are the live Stats. l1Hits, bumped on the hot path by every
// core, has a cache line to itself: 56 bytes of padding on each side keep
// every other field (here and in Cache) out of any 64-byte line it is in.
type counters struct {
	_      [56]byte
	l1Hits atomic.Uint64
	_      [56]byte
	l2Hits, misses, negativeHits, loads, loadErrors, leaseWaits, staleDiscards,
	l2Errors, corrupt, rejected, invalidations, resets,
	queued, delivered, purges, l1Unproven, breakerOpens, breakerSkips,
	staleServed, refreshes atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		L1Hits: c.l1Hits.Load(), L2Hits: c.l2Hits.Load(), Misses: c.misses.Load(),
		NegativeHits: c.negativeHits.Load(), Loads: c.loads.Load(), LoadErrors: c.loadErrors.Load(),
		LeaseWaits: c.leaseWaits.Load(), StaleDiscards: c.staleDiscards.Load(),
		L2Errors: c.l2Errors.Load(), Corrupt: c.corrupt.Load(), Rejected: c.rejected.Load(),
		Invalidations: c.invalidations.Load(), Resets: c.resets.Load(),
		Queued: c.queued.Load(), Delivered: c.delivered.Load(),
		Purges: c.purges.Load(), L1Unproven: c.l1Unproven.Load(),
		BreakerOpens: c.breakerOpens.Load(), BreakerSkips: c.breakerSkips.Load(),
		StaleServed: c.staleServed.Load(), Refreshes: c.refreshes.Load(),
	}
}
