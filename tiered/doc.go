// Package tiered is a two-tier cache for services that run as many
// instances: a ristretto cache in each process (L1) in front of Redis (L2),
// kept coherent across the fleet.
//
// # Reads
//
// [Cache.GetOrLoad] looks in L1, then in Redis, then calls the caller's
// [Loader] (the database), and stores what it loaded in both tiers. In each
// process, concurrent callers of one key share one flight (group.go, a
// singleflight that also tells a caller whether it leads, for GetMany):
// one Redis read and at most one loader call. Across processes, a Redis lease makes the fleet call the loader once
// for a cold key: the first node to miss takes the lease and loads; the others
// wait to be woken by a message when the value lands, then read it from
// Redis. The shared flight runs on a context without the first caller's
// cancellation; each caller waits on its own context and may leave early.
// A loader panic becomes a [*PanicError] for every waiter.
//
// If Redis fails, GetOrLoad still answers from the loader: a read never fails
// only because Redis did. [Cache.Get] reads the two tiers without a loader
// and returns [ErrNotFound] on a miss and [ErrUnavailable] when Redis failed.
// A loader runs on a goroutine of its own and is not waited for past
// [Options.LoadTimeout] ([ErrLoadTimeout]).
//
// # Batch reads
//
// [Cache.GetMany] is GetOrLoad for many keys with one round trip per step:
// L1, one MGET for the misses, one pipeline of leases, one call of a
// [BulkLoader] for the keys this node leads, one pipeline of fills. Its keys
// join the same flights as concurrent GetOrLoad calls, and every per-key
// rule below holds for each. A partial failure returns the other values
// with a [*BatchError]. [Cache.GetManyCached] is the batch twin of Get.
//
// # Serving through trouble
//
// [Options.Fresh] refreshes a value read after its refresh point in the
// background, once per fleet, before it expires: a hot key never makes its
// callers wait for the loader. [Options.MaxStale] keeps values in Redis
// past their expiry, and serves one when its load fails or runs past
// [Options.SoftTimeout] (fail-safe), with a nil error; [ReadInfo] and
// Stats.StaleServed tell the caller. Fail-safe never serves a value that a
// Set or Delete removed: Redis must confirm that it still holds the very
// bytes the flight read.
//
// # Writes and invalidation
//
// [Cache.Set] and [Cache.Delete] change Redis first, then the local L1, and
// publish an invalidation on the [Bus] from the same Lua script that
// changed Redis. Every other node drops the keys from its L1 when the message
// arrives. A write gives Redis the whole of its context and
// [Options.WriteTimeout], so a paused server is waited out; a write that
// still fails leaves its keys' invalidation in the bus's outbox, which
// delivers it as soon as Redis answers, and returns an error wrapping
// [ErrQueued]. A read fails fast ([Options.OpTimeout]) and falls through to
// the loader; after repeated failures a breaker sends reads straight there.
//
// # Bounded staleness
//
// Pub/sub is lossy and can be late. A node serves from L1 only while its
// bus proves that it has applied every invalidation published up to
// [Options.MaxStaleness] ago (timestamped PINGs on the subscription; see
// [Bus]); otherwise it reads through. So no read returns a
// value whose overwrite was acknowledged more than MaxStaleness earlier. A
// subscription gap drops L1 and every running flight; a server that came
// back from a restart or failover with old data is detected and the
// namespace purged before it is read.
//
// # Per-identity data
//
// A loader runs once per key for every caller of the key, with the first
// caller's context values. A loader of a shared key must therefore never
// read who is asking from its context: a key "me" whose loader reads the
// user caches one user's data for all. [Cache.Scope] returns a view whose
// keys carry a hash of the identity: each identity has its own flights and
// entries, a shared key cannot collide with them ([ErrKeyReserved]), and
// [Scoped.Clear] drops one identity's entries fleet-wide.
//
// # Invalidating groups
//
// A loader tags what it loads with [AddTags] (before it reads the source),
// and [Cache.InvalidateTags] drops every entry of a tag, from Redis and
// from every node's L1, as Delete of their keys would. [Cache.Clear] drops
// the whole namespace. Both go through the outbox when Redis fails.
//
// # Never putting an old value back
//
// A load that began before a write must not store its (older) result after
// the write. In Redis, the loader's result is written by a compare-and-set on
// the lease, which every write deletes. In L1, a fill guard (package l1)
// records a generation before the load and stores the result only if no
// invalidation of the key happened since. A write also makes callers that
// arrive after it start a new flight rather than join one that began before
// it, so a node reads its own writes.
//
// # TTLs
//
// Every value has a TTL ([Options.TTL], required, plus jitter); its L1 TTL
// is at most [Options.L1TTL] and never longer than what is left of it. A
// loader's [ErrNotFound] is cached for [Options.NegativeTTL]. One value may
// have a TTL of its own, up to [Options.MaxTTL]: [Cache.SetWithTTL], or
// [OverrideTTL] called by its loader.
//
// # Tracing
//
// [Options.Tracer], off by default, gets a span around each operation that
// gets past L1 and each loader call ([Op] lists them), and the context it
// returns is the one the loader and the operation's Redis calls get: a
// tracing hook on the go-redis client (go-redis's redisotel) nests its
// spans of the Redis round trips under the cache's, so the cache does not
// trace Redis itself. L1 hits are not traced unless
// [Options.TraceL1Hits] asks: a span costs many times a hit. The module
// github.com/tieredcache/tiered/otelcache implements [Tracer] with
// OpenTelemetry; this package depends on no tracing library.
//
// docs/design.md and docs/consistency.md in the repository describe the
// mechanisms and the guarantees in full.
package tiered
