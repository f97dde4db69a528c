// Package pubsub is the invalidation bus of tiered: one Redis pub/sub
// subscription per process that tells every registered cache which keys other
// nodes wrote, and wakes nodes waiting for a lease.
//
// Writers publish from the Lua script that changes the data (see package
// l2), so a change and its announcement cannot part. A [Message] carries a
// format version, a kind, the sender's node ID, the namespace and the keys,
// never values; see message.go. A node ignores its own messages and counts
// and ignores garbled ones.
//
// Redis pub/sub is at-most-once and a reconnect silently loses whatever was
// published in between. The [Bus] therefore tracks the health of its
// subscription: it is unhealthy from the moment a receive fails (or a PING
// goes unanswered for a health interval) until Redis confirms the
// resubscription; on every confirmation it resets every registered
// [Handler], dropping all L1 entries, before it reports healthy again.
// Caches do not serve from L1 while the bus is unhealthy.
package pubsub
