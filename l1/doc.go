// Package l1 is the in-process tier of tiered: a byte-bounded ristretto v2
// cache of decoded values with a per-entry TTL and a fill guard.
//
// # Decoded values, byte costs
//
// [Cache] stores values already decoded, so a hit costs one ristretto lookup
// and no decoding or allocation. Each entry's cost is the size in bytes of its
// encoded form (plus the key and a fixed per-entry overhead), and the
// ristretto config sets IgnoreInternalCost: the byte count we pass already is
// the whole budget, and letting ristretto add its own ~100-byte internal
// estimate on top would make [Options.MaxBytes] mean something other than
// bytes of cached data.
//
// # Expiry
//
// Every entry has a TTL, kept in the entry and checked by [Cache.GetAt]
// against a clock reading the caller passes in, so that a hit reads the
// clock once for everything the caller checks (package tiered also checks
// its bus's freshness proof with it). Entries are stored in ristretto
// without a ristretto TTL, whose Get would read the wall clock again. An
// expired entry is a miss at once; it leaves ristretto when the next fill of
// its key replaces it or when the byte budget evicts it, so it can occupy
// budget, never be served.
//
// # The fill guard
//
// A load (from Redis or from the database) must not put a value into L1 if the
// key was invalidated while the load was running: the invalidation belongs to
// a write that came after the value was read, and filling would bring the old
// value back. The guard is in guard.go. Before a load starts, [Cache.Begin]
// returns a [Ticket] that records the key's generation; [Cache.Invalidate]
// advances the generation (under the same lock that deletes the entry); and
// [Cache.Fill] stores the value only if the generation has not moved. Keys
// share generations in a fixed number of stripes, so memory is bounded; a
// collision can only make a fill be skipped, never let a stale one through.
// [Cache.Clear] advances an epoch that every ticket also records.
//
// ristretto's Set is asynchronous and may be dropped under contention.
// Nothing here relies on read-your-write from L1: a dropped fill is a later
// miss. Deletion needs care: ristretto's Del removes an entry at once, but a
// Set still in its write buffer is applied afterwards and stays visible until
// the delete queued behind it is applied. Waiting for the buffer to drain
// would make every invalidation as slow as ristretto's busiest moment, so
// instead the stripe remembers the fills ristretto may not have applied yet
// (a tracker goroutine learns, every few milliseconds, up to which fill
// ristretto has caught up), [Cache.Invalidate] marks those of its key dead,
// and [Cache.Get] treats a dead entry as a miss. When Invalidate returns, no
// older value of its keys is visible, and it never waits for ristretto.
//
// This package does not import Redis.
//
// This package is a building block of package tiered: its exported names
// are what tiered needs from it, not an API of their own. Applications use
// package tiered (tiered.New, whose Options set the L1 budget) rather than
// importing it.
package l1
