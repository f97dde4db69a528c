// Package pubsub is the invalidation bus of tiered: one Redis pub/sub
// subscription per process that tells every registered cache which keys other
// nodes wrote, wakes nodes waiting for a lease, proves how fresh it is, and
// keeps the invalidations that writers could not deliver.
//
// Writers publish from the Lua script that changes the data (see package
// l2), so a change and its announcement cannot part. A [Message] carries a
// format version, a kind, the sender's node ID, the namespace and the keys,
// never values; see message.go. A node ignores its own messages and counts
// and ignores garbled ones.
//
// # Gaps
//
// Redis pub/sub is at-most-once and a reconnect silently loses whatever was
// published in between. The [Bus] therefore tracks the health of its
// subscription: it is unhealthy from the moment a receive fails, its
// SUBSCRIBE goes unconfirmed for a health interval, or nothing arrives for
// two (the bus PINGs at least once an interval), until Redis confirms a
// resubscription on a new connection. It resets every registered [Handler]
// when it goes down and again on the confirmation, before it reports healthy.
//
// # The freshness proof
//
// Healthy is not enough: a live subscription can deliver late (a goroutine
// starved of CPU, a paused server). The bus sends PINGs carrying their send
// time on the subscription connection; Redis answers a PING after every
// message published before it, so a handled PONG proves that everything
// published before its send time has been applied. [Bus.Proven] reports
// whether that proof is at most MaxStaleness old, and caches serve from L1
// only while it does.
//
// # Classic and sharded
//
// On a Redis Cluster the bus uses sharded pub/sub by default ([ModeAuto]):
// writers SPUBLISH on the channel of their key's hash slot, and the bus
// holds one connection per master, subscribed to the channels of the slots
// that master serves. A session is then the set of those connections: it
// is healthy when all have confirmed, proven to the oldest of their PONGs,
// and lost as a whole when one fails or a slot moves (session.go).
//
// # The outbox
//
// A write whose Redis call failed queues its keys' invalidation with
// [Bus.Queue]. One goroutine delivers the outbox through the [Deliverer] of
// each namespace, with backoff, as soon as Redis answers; [Bus.Pending]
// tells a cache which keys it must not serve meanwhile. The outbox is
// bounded: past OutboxSize keys a namespace is purged instead. See
// outbox.go.
//
// This package is a building block of package tiered: its exported names
// are what tiered needs from it, not an API of their own. Applications use
// package tiered (tiered.NewBus, tiered.BusOptions, tiered.Options.Bus)
// rather than importing it; tiered.NewBusFrom is for the rare program that
// also registers handlers of its own on the bus.
package pubsub
