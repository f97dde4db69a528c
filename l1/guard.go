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

// stripe holds the generation of every key that hashes to it.
type stripe struct {
	mu  sync.Mutex    // orders fills against invalidations of this stripe's keys
	gen atomic.Uint64 // written only with mu held; read without it by begin
	_   [48]byte      // keep stripes on separate cache lines
}

// guard is the fill guard: stripes of generations plus an epoch for Clear.
type guard struct {
	// clearMu is held for reading by every fill and invalidation, and for
	// writing by clear, so that a clear is never interleaved with either.
	clearMu sync.RWMutex
	epoch   atomic.Uint64 // written only with clearMu held for writing
	stripes [stripeCount]stripe
}

func (g *guard) begin(h uint64) Ticket {
	i := uint32(h & (stripeCount - 1))
	return Ticket{epoch: g.epoch.Load(), gen: g.stripes[i].gen.Load(), stripe: i}
}

// fill runs store if nothing touched the ticket's stripe since begin.
func (g *guard) fill(t Ticket, store func()) bool {
	g.clearMu.RLock()
	s := &g.stripes[t.stripe]
	s.mu.Lock()
	ok := g.epoch.Load() == t.epoch && s.gen.Load() == t.gen
	if ok {
		store()
	}
	s.mu.Unlock()
	g.clearMu.RUnlock()
	return ok
}

// invalidate advances h's stripe and runs drop while holding its lock.
func (g *guard) invalidate(h uint64, drop func()) {
	g.clearMu.RLock()
	s := &g.stripes[h&(stripeCount-1)]
	s.mu.Lock()
	s.gen.Add(1)
	drop()
	s.mu.Unlock()
	g.clearMu.RUnlock()
}

// clear advances the epoch and runs drop with every fill excluded.
func (g *guard) clear(drop func()) {
	g.clearMu.Lock()
	g.epoch.Add(1)
	drop()
	g.clearMu.Unlock()
}
