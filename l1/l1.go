package l1

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/dgraph-io/ristretto/v2/z"

	"github.com/tieredcache/tiered/internal/mono"
)

// Defaults for [Options].
const (
	// DefaultMaxBytes is the default byte budget of one Cache: 64 MiB.
	DefaultMaxBytes = 64 << 20
	// DefaultAverageEntryBytes is the entry size assumed when deriving
	// NumCounters from MaxBytes.
	DefaultAverageEntryBytes = 512
	// EntryOverhead is added to every entry's cost, beside the key's
	// length, to account for the stored item and ristretto's bookkeeping.
	EntryOverhead = 96
)

// trackInterval is how often the tracker goroutine learns which fills
// ristretto has applied.
const trackInterval = 10 * time.Millisecond

// Options configures a [Cache]. A nil *Options means all defaults.
type Options struct {
	// MaxBytes bounds the sum of entry costs. Default [DefaultMaxBytes].
	MaxBytes int64

	// NumCounters is ristretto's number of access-frequency counters,
	// ideally ten times the number of entries expected when full.
	// Default: 10 × MaxBytes / [DefaultAverageEntryBytes], at least 1000.
	NumCounters int64
}

func (o *Options) withDefaults() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.MaxBytes < 0 || r.NumCounters < 0 {
		return r, errors.New("l1: MaxBytes and NumCounters must not be negative")
	}
	if r.MaxBytes == 0 {
		r.MaxBytes = DefaultMaxBytes
	}
	if r.NumCounters == 0 {
		r.NumCounters = max(10*r.MaxBytes/DefaultAverageEntryBytes, 1000)
	}
	return r, nil
}

// slot is what ristretto stores for a key. dead is set by an invalidation
// that found the slot still in ristretto's write buffer: ristretto will
// apply it after the invalidation's delete, and Get must not return it in
// the meantime.
type slot[V any] struct {
	val     V
	key     string
	expires int64  // mono.Now() after which Get misses
	seq     uint64 // fill sequence number; see Cache.fillLocked
	dead    atomic.Bool
}

// Cache is a byte-bounded in-process cache of decoded values of type V with a
// per-entry TTL and a fill guard (see the package doc).
//
// A Cache is safe for concurrent use by multiple goroutines. Close must not
// run concurrently with other methods; after Close, Get misses and writes are
// ignored.
type Cache[V any] struct {
	rc    *ristretto.Cache[string, *slot[V]]
	guard guard[V]

	// fillSeq numbers fills; every fill numbered ≤ applied has been applied
	// (or dropped) by ristretto, so it is in the store if anywhere.
	fillSeq atomic.Uint64
	applied atomic.Uint64

	// clearReqs numbers calls of Clear; clearsDone is the highest number a
	// finished clear covered (it began after that call). Both change with
	// guard.clearMu held, except clearReqs's increment.
	clearReqs, clearsDone atomic.Uint64

	closed atomic.Bool
	stop   chan struct{} // closed by Close to stop the tracker
	done   chan struct{} // closed by the tracker when it returns
}

// New returns a Cache. It starts ristretto's goroutines and a tracker of
// applied fills; Close stops them.
func New[V any](opts *Options) (*Cache[V], error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	rc, err := ristretto.NewCache(&ristretto.Config[string, *slot[V]]{
		NumCounters: o.NumCounters,
		MaxCost:     o.MaxBytes,
		BufferItems: 64,
		// Costs passed to Set are bytes of the encoded value plus
		// EntryOverhead: see the package doc.
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, errors.Join(errors.New("l1: cannot create ristretto cache"), err)
	}
	c := &Cache[V]{rc: rc, stop: make(chan struct{}), done: make(chan struct{})}
	go c.track()
	return c, nil
}

// stripeOf returns the index of key's fill-guard stripe.
func stripeOf(key string) uint32 { return uint32(z.MemHashString(key) & (stripeCount - 1)) }

// Get returns the value stored for key, if any and not expired.
func (c *Cache[V]) Get(key string) (V, bool) { return c.GetAt(key, mono.Now()) }

// GetAt is Get for a caller that already read the clock: now is mono.Now().
// An entry whose TTL ran out before now misses.
func (c *Cache[V]) GetAt(key string, now int64) (V, bool) {
	s, ok := c.rc.Get(key)
	if !ok || now >= s.expires || s.dead.Load() {
		var zero V
		return zero, false
	}
	return s.val, true
}

// Begin returns the ticket a load of key must present to Fill.
func (c *Cache[V]) Begin(key string) Ticket {
	return c.guard.begin(stripeOf(key))
}

// Fill stores v for key with the given cost in bytes (of its encoded form;
// Fill adds the key's length and EntryOverhead) and TTL, unless key was
// invalidated or the cache cleared since t was issued by Begin. A ttl ≤ 0
// stores nothing (ristretto would read 0 as "never expires"). It reports
// whether the value was handed to ristretto, which may still drop it.
func (c *Cache[V]) Fill(t Ticket, key string, v V, cost int64, ttl time.Duration) bool {
	if ttl <= 0 || c.closed.Load() {
		return false
	}
	s := c.guard.lock(t.stripe)
	defer c.guard.unlock(s)
	if !c.guard.validLocked(t, s) {
		return false
	}
	return c.fillLocked(s, key, v, cost, ttl)
}

// fillLocked hands a new slot to ristretto and, if ristretto buffered it,
// remembers it in the stripe until the tracker sees it applied, so that an
// invalidation meanwhile can mark it dead. The sequence number is taken after
// the hand-over, so every fill numbered ≤ the tracker's reading was in
// ristretto's buffer before the tracker's Wait.
//
// The TTL is the slot's own expiry, checked by GetAt, not ristretto's:
// ristretto checks its TTLs with time.Now on every Get, which would double
// the cost of a hit for a clock the caller has already read.
func (c *Cache[V]) fillLocked(s *stripe[V], key string, v V, cost int64, ttl time.Duration) bool {
	sl := &slot[V]{val: v, key: key, expires: mono.Now() + int64(ttl)}
	if !c.rc.Set(key, sl, cost+int64(len(key))+EntryOverhead) {
		return false
	}
	sl.seq = c.fillSeq.Add(1)
	c.pruneLocked(s)
	s.pending = append(s.pending, sl)
	return true
}

// pruneLocked forgets the stripe's fills that ristretto has applied.
func (c *Cache[V]) pruneLocked(s *stripe[V]) {
	applied := c.applied.Load()
	keep := s.pending[:0]
	for _, p := range s.pending {
		if p.seq > applied {
			keep = append(keep, p)
		}
	}
	clear(s.pending[len(keep):])
	s.pending = keep
}

// invalidateLocked advances the stripe's generation, marks dead the slots of
// key that ristretto may not have applied yet, and deletes key.
func (c *Cache[V]) invalidateLocked(s *stripe[V], key string) {
	s.gen.Add(1)
	c.pruneLocked(s)
	for _, p := range s.pending {
		if p.key == key {
			p.dead.Store(true)
		}
	}
	c.rc.Del(key)
}

// Replace is Fill for a local write: it first invalidates key, so that a load
// that began before the write cannot fill afterwards, then stores v unless
// another invalidation of key happened since t (then which of the two writes
// reached Redis last is unknown, and key stays absent).
func (c *Cache[V]) Replace(t Ticket, key string, v V, cost int64, ttl time.Duration) bool {
	if c.closed.Load() {
		return false
	}
	s := c.guard.lock(t.stripe)
	defer c.guard.unlock(s)
	valid := c.guard.validLocked(t, s)
	c.invalidateLocked(s, key)
	if !valid || ttl <= 0 {
		return false
	}
	return c.fillLocked(s, key, v, cost, ttl)
}

// Invalidate deletes keys and advances their fill-guard generations, so that
// loads in flight for them will not fill. When it returns, Get no longer
// returns any value stored before the call. It does not wait for ristretto.
func (c *Cache[V]) Invalidate(keys ...string) {
	if c.closed.Load() {
		return
	}
	for _, k := range keys {
		s := c.guard.lock(stripeOf(k))
		c.invalidateLocked(s, k)
		c.guard.unlock(s)
	}
}

// Clear drops every entry and invalidates every ticket issued before it.
//
// Concurrent calls share the work: a Clear that, once it holds the lock,
// finds that a clear which began after it was called has finished returns
// at once, since that clear did all it must. A burst of resets (every
// cache of a process purged at once, say) then costs a couple of ristretto
// clears, not one each in turn.
func (c *Cache[V]) Clear() {
	if c.closed.Load() {
		return
	}
	req := c.clearReqs.Add(1)
	c.guard.clearMu.Lock()
	defer c.guard.clearMu.Unlock()
	if c.clearsDone.Load() >= req {
		return
	}
	covers := c.clearReqs.Load() // every Clear called before this one began
	defer c.clearsDone.Store(covers)
	c.guard.epoch.Add(1)
	for i := range c.guard.stripes {
		s := &c.guard.stripes[i]
		for _, p := range s.pending {
			p.dead.Store(true)
		}
		clear(s.pending)
		s.pending = s.pending[:0]
	}
	c.rc.Clear()
}

// track advances applied: every trackInterval, if there were fills, it waits
// for ristretto to apply what is buffered. It returns when Close is called.
func (c *Cache[V]) track() {
	defer close(c.done)
	t := time.NewTicker(trackInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		seq := c.fillSeq.Load()
		if seq == c.applied.Load() {
			continue
		}
		c.rc.Wait()
		c.applied.Store(seq)
	}
}

// Wait blocks until ristretto has applied every buffered write, so that
// what Fill and Replace accepted is visible to Get. The cache's read and
// write paths do not need it (a fill not yet visible costs one miss);
// package tiered's tests and benchmarks, which live in another package,
// call it to observe L1 deterministically, which is why it is exported.
func (c *Cache[V]) Wait() {
	c.guard.clearMu.RLock()
	defer c.guard.clearMu.RUnlock()
	if !c.closed.Load() {
		c.rc.Wait()
	}
}

// Close stops the goroutines New started and drops every entry. It is
// idempotent.
func (c *Cache[V]) Close() {
	if c.closed.Swap(true) {
		return
	}
	close(c.stop)
	<-c.done
	// Exclude fills, invalidations and clears that passed the closed check.
	c.guard.clearMu.Lock()
	c.rc.Close()
	c.guard.clearMu.Unlock()
}
