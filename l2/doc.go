// Package l2 is the Redis tier of tiered: values in a versioned envelope,
// the leases that let a fleet load a cold key once, and the Lua scripts that
// keep values, leases and invalidation announcements consistent.
//
// [Store] works over any redis.UniversalClient (single node, Sentinel
// failover, Cluster). Keys are laid out as <namespace>:{<key>}, so a value and
// its lease share a Cluster hash slot; a key that is empty or starts with '}'
// or '~' is stored as ~<key> between the braces, so that its hash tag is never
// empty (keys.go explains the layout). Every call is bounded by
// [Options.OpTimeout]. Errors are classified: [ErrMiss] for a missing value,
// [ErrUnavailable] for a Redis failure, [ErrCorrupt] for bytes that do not
// decode.
//
// Batch operations ([Store.GetMany], [Store.GetOrLeaseMany],
// [Store.FillMany], [Store.ReleaseMany]) take one round trip for many keys,
// and report keys that failed alone with a [BatchError].
//
// The envelope format is in envelope.go, the lease protocol in lease.go, the
// batch operations in batch.go, the scripts in scripts.go. This package
// knows nothing of the L1 tier or of the message format of the
// invalidation bus: writes take already-encoded messages in an [Announce]
// and publish them from the same script.
//
// This package is a building block of package tiered: its exported names
// are what tiered needs from it, not an API of their own. Applications use
// package tiered (tiered.New, tiered.Codec, tiered.ErrUnavailable and the
// other errors) rather than importing it.
package l2
