package l1

import (
	"sync"
	"sync/atomic"
)

// stripeCount is the number of generation stripes; a power of two.
const stripeCount = 4096

// A Ticket records the state of one key's fill guard when a load begins.
// Pass it to [Cache.Fill] or [Cache.Replace] when the load ends.
type Ticket struct {
	epoch  uint64
	gen    uint64
	stripe uint32
}

// stripe holds the generation of every key that hashes to it, and the fills
// of those keys that ristretto may not have applied yet.
type stripe[V any] struct {
	mu      sync.Mutex    // orders fills against invalidations of this stripe's keys
	gen     atomic.Uint64 // written only with mu held; read without it by begin
	pending []*slot[V]    // guarded by mu; see Cache.fillLocked
}

// guard is the fill guard: stripes of generations plus an epoch for Clear.
type guard[V any] struct {
	// clearMu is held for reading by every fill and invalidation, and for
	// writing by Clear and Close, so that neither is interleaved with them.
	clearMu sync.RWMutex
	epoch   atomic.Uint64 // written only with clearMu held for writing
	stripes [stripeCount]stripe[V]
}

func (g *guard[V]) begin(i uint32) Ticket {
	return Ticket{epoch: g.epoch.Load(), gen: g.stripes[i].gen.Load(), stripe: i}
}

// lock locks stripe i (and excludes Clear) and returns it.
func (g *guard[V]) lock(i uint32) *stripe[V] {
	g.clearMu.RLock()
	s := &g.stripes[i]
	s.mu.Lock()
	return s
}

func (g *guard[V]) unlock(s *stripe[V]) {
	s.mu.Unlock()
	g.clearMu.RUnlock()
}

// validLocked reports whether nothing touched t's stripe since t was issued.
func (g *guard[V]) validLocked(t Ticket, s *stripe[V]) bool {
	return g.epoch.Load() == t.epoch && s.gen.Load() == t.gen
}
