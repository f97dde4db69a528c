package tiered

import (
	"errors"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
)

// Stats are the counters of one [Cache] since New.
//
// Every read counts once per caller: a Get or GetOrLoad call, or a key of a
// GetMany or GetManyCached call, is one L1 hit, one L2 hit or one miss,
// whether it led its key's flight or joined another caller's. So
// L1Hits+L2Hits+Misses is the number of reads, and the hit ratio is
// (L1Hits+L2Hits) divided by it. Loads, LoadErrors and LeaseWaits count
// the work itself: one loader call or lease wait may answer many reads.
type Stats struct {
	L1Hits        uint64 // reads answered from L1 (NegativeHits included)
	L2Hits        uint64 // reads answered from Redis (NegativeHits included)
	Misses        uint64 // reads answered by neither tier: by the loader, by fail-safe, ErrNotFound from Get, an error, or a caller that left first
	NegativeHits  uint64 // reads answered from L1 or Redis by a cached "not found"
	Loads         uint64 // loader calls (one may answer many reads)
	LoadErrors    uint64 // loader calls that failed (ErrNotFound is not a failure)
	LeaseWaits    uint64 // flights that waited for another node's lease (one may answer many reads)
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

// counters are the live Stats. The L1 hit path writes only hits, whose
// cells are spread over cache lines (see stripes); the other counters are
// bumped off the hot path.
type counters struct {
	hits stripes // L1Hits, and NegativeHits from L1
	l2Hits, misses, negativeHits, loads, loadErrors, leaseWaits, staleDiscards,
	l2Errors, corrupt, rejected, invalidations, resets,
	queued, delivered, purges, l1Unproven, breakerOpens, breakerSkips,
	staleServed, refreshes atomic.Uint64
}

func (c *counters) snapshot() Stats {
	hits, neg := c.hits.sum()
	return Stats{
		L1Hits: hits, L2Hits: c.l2Hits.Load(), Misses: c.misses.Load(),
		NegativeHits: neg + c.negativeHits.Load(), Loads: c.loads.Load(), LoadErrors: c.loadErrors.Load(),
		LeaseWaits: c.leaseWaits.Load(), StaleDiscards: c.staleDiscards.Load(),
		L2Errors: c.l2Errors.Load(), Corrupt: c.corrupt.Load(), Rejected: c.rejected.Load(),
		Invalidations: c.invalidations.Load(), Resets: c.resets.Load(),
		Queued: c.queued.Load(), Delivered: c.delivered.Load(),
		Purges: c.purges.Load(), L1Unproven: c.l1Unproven.Load(),
		BreakerOpens: c.breakerOpens.Load(), BreakerSkips: c.breakerSkips.Load(),
		StaleServed: c.staleServed.Load(), Refreshes: c.refreshes.Load(),
	}
}

// read counts one read by where its answer came from (see Stats): from
// and err are the answer's, miss marks a Redis miss reported as
// ErrNotFound (Get's).
func (c *counters) read(from Origin, miss bool, err error) {
	switch {
	case from == OriginL1:
		c.hits.add(errors.Is(err, ErrNotFound))
	case from == OriginRedis && !miss:
		c.l2Hits.Add(1)
		if errors.Is(err, ErrNotFound) {
			c.negativeHits.Add(1)
		}
	default:
		c.misses.Add(1)
	}
}

// stripes are the counters of the L1 hit path, one cell per stripe: a hit
// adds to a cell picked at random (math/rand/v2's per-thread generator, no
// lock), so cores hitting at once rarely write the same cache line, and
// none writes a line that other fields share. There are about twice as
// many cells as Ps.
type stripes struct {
	cells []stripe
	mask  uint32 // len(cells)-1; len(cells) is a power of two
}

// stripe is one cell: its counters sit 56 bytes from either end of 128
// bytes, so two cells' counters are never in one 64-byte line, whatever
// the slice's alignment.
type stripe struct {
	_         [56]byte
	hits, neg atomic.Uint64
	_         [56]byte
}

func newStripes() stripes {
	n := 1
	for n < 2*runtime.GOMAXPROCS(0) {
		n *= 2
	}
	return stripes{cells: make([]stripe, n), mask: uint32(n - 1)}
}

func (s *stripes) add(neg bool) {
	c := &s.cells[rand.Uint32()&s.mask]
	c.hits.Add(1)
	if neg {
		c.neg.Add(1)
	}
}

func (s *stripes) sum() (hits, neg uint64) {
	for i := range s.cells {
		hits += s.cells[i].hits.Load()
		neg += s.cells[i].neg.Load()
	}
	return hits, neg
}
