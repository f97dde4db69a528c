package l1

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Defaults for [Options].
const (
	// DefaultMaxBytes is the default byte budget of one Cache: 64 MiB.
	DefaultMaxBytes = 64 << 20
	// DefaultAverageEntryBytes is the entry size assumed when deriving
	// NumCounters from MaxBytes.
	DefaultAverageEntryBytes = 512
	// EntryOverhead is added to every entry's cost to account for the key,
	// the stored item and ristretto's bookkeeping.
	EntryOverhead = 96
)

// ErrClosed is returned by methods of a closed Cache that report errors.
var ErrClosed = errors.New("l1: cache is closed")

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

// Cache is a byte-bounded in-process cache of decoded values of type V with a
// per-entry TTL and a fill guard (see the package doc).
//
// A Cache is safe for concurrent use by multiple goroutines. Close must not
// run concurrently with other methods; after Close, Get misses and writes are
// ignored.
type Cache[V any] struct {
	rc     *ristretto.Cache[string, V]
	guard  guard
	closed atomic.Bool
}

// New returns a Cache. It starts ristretto's worker goroutines; Close stops
// them.
func New[V any](opts *Options) (*Cache[V], error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	rc, err := ristretto.NewCache(&ristretto.Config[string, V]{
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
	return &Cache[V]{rc: rc}, nil
}

func hash(key string) uint64 { return z.MemHashString(key) }

// Get returns the value stored for key, if any and not expired.
func (c *Cache[V]) Get(key string) (V, bool) {
	return c.rc.Get(key)
}

// Begin returns the ticket a load of key must present to Fill.
func (c *Cache[V]) Begin(key string) Ticket {
	return c.guard.begin(hash(key))
}

// Fill stores v for key with the given cost in bytes and TTL, unless key was
// invalidated or the cache cleared since t was issued by Begin. A ttl ≤ 0
// stores nothing (ristretto would read 0 as "never expires"). It reports
// whether the value was handed to ristretto, which may still drop it.
func (c *Cache[V]) Fill(t Ticket, key string, v V, cost int64, ttl time.Duration) bool {
	if ttl <= 0 || c.closed.Load() {
		return false
	}
	return c.guard.fill(t, func() {
		c.rc.SetWithTTL(key, v, cost+EntryOverhead, ttl)
	})
}

// Replace is Fill for a local write: it also invalidates key, so a load that
// began before the write cannot fill afterwards, and when the guard rejects
// v (another write of key happened since t) it only deletes the entry,
// because which of the two writes reached Redis last is unknown. Like
// Invalidate, it returns only when no older value of key is visible.
func (c *Cache[V]) Replace(t Ticket, key string, v V, cost int64, ttl time.Duration) bool {
	if c.closed.Load() {
		return false
	}
	c.guard.invalidate(hash(key), func() { c.rc.Del(key) })
	c.wait()
	// The invalidation above advanced the generation once; a ticket that
	// was current before it is one behind.
	t.gen++
	if ttl <= 0 {
		return false
	}
	return c.guard.fill(t, func() {
		c.rc.SetWithTTL(key, v, cost+EntryOverhead, ttl)
	})
}

// Invalidate deletes keys and advances their fill-guard generations, so that
// loads in flight for them will not fill. When it returns, no value stored
// before the call is visible.
//
// ristretto's Del removes an entry at once, but a Set still in ristretto's
// write buffer is applied after that and stays visible until the delete
// queued behind it is applied. Invalidate therefore waits for the buffer to
// drain (once, for all keys) before it returns. This is a write-path cost;
// Get never waits.
func (c *Cache[V]) Invalidate(keys ...string) {
	if c.closed.Load() || len(keys) == 0 {
		return
	}
	for _, k := range keys {
		c.guard.invalidate(hash(k), func() { c.rc.Del(k) })
	}
	c.wait()
}

// wait blocks until ristretto applied every buffered write, unless the cache
// is closed meanwhile.
func (c *Cache[V]) wait() {
	c.guard.clearMu.RLock()
	defer c.guard.clearMu.RUnlock()
	if !c.closed.Load() {
		c.rc.Wait()
	}
}

// Clear drops every entry and invalidates every ticket issued before it.
func (c *Cache[V]) Clear() {
	if c.closed.Load() {
		return
	}
	c.guard.clear(c.rc.Clear)
}

// Wait blocks until ristretto has applied every buffered write. It is for
// tests; the read and write paths never call it.
func (c *Cache[V]) Wait() {
	if !c.closed.Load() {
		c.rc.Wait()
	}
}

// Close stops ristretto's goroutines and drops every entry. It is idempotent.
func (c *Cache[V]) Close() {
	if c.closed.Swap(true) {
		return
	}
	// Exclude fills, invalidations and clears that passed the closed check.
	c.guard.clearMu.Lock()
	c.rc.Close()
	c.guard.clearMu.Unlock()
}
