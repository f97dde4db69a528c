package pubsub

import (
	"crypto/rand"
	"errors"
	"log/slog"
	"time"
)

// Defaults for [Options].
const (
	// DefaultChannel is the Redis channel of the bus.
	DefaultChannel = "tiered:bus"
	// DefaultHealthInterval: a subscription that has answered nothing (no
	// message, no PONG) for twice this long, or whose SUBSCRIBE has not been
	// confirmed within it, is replaced by a new connection. The bus PINGs at
	// least this often.
	DefaultHealthInterval = time.Second
	// DefaultMaxStaleness is how old the bus's proof of freshness may be for
	// [Bus.Proven] to report true.
	DefaultMaxStaleness = 100 * time.Millisecond
	// DefaultOutboxSize bounds the keys the outbox holds.
	DefaultOutboxSize = 10000
	// DefaultCloseTimeout is how long Close keeps delivering the outbox.
	DefaultCloseTimeout = 2 * time.Second
)

// Mode chooses the flavour of Redis pub/sub the bus uses.
type Mode int

const (
	// ModeAuto is ModeSharded on a *redis.ClusterClient and ModeClassic on
	// any other client. See docs/design.md, "Classic or sharded pub/sub on
	// a Cluster", for the figures behind it.
	ModeAuto Mode = iota
	// ModeClassic publishes with PUBLISH and subscribes with one SUBSCRIBE
	// to Channel. On a Cluster every message is broadcast over the cluster
	// bus to every node, and the freshness proof covers only the node the
	// subscription is on, not the relay from the others.
	ModeClassic
	// ModeSharded (Redis 7 and a *redis.ClusterClient) publishes with
	// SPUBLISH on the channel of the written key's hash slot (Channel plus
	// a hash tag; see internal/hashslot), from the script that writes,
	// and subscribes on every master to the channels of the slots it
	// serves. A message stays on the shard of its key, and the proof is
	// taken on every shard. A failover or a slot migration ends the
	// subscription like any gap; the next one follows the new slot map.
	ModeSharded
)

// Options configures a [Bus]. A nil *Options means all defaults.
type Options struct {
	// Channel is the Redis channel every node of the fleet uses.
	// Default [DefaultChannel].
	Channel string
	// NodeID identifies this process in messages; a node ignores its own.
	// Default: 16 random characters.
	NodeID string
	// HealthInterval: see [DefaultHealthInterval], the default.
	HealthInterval time.Duration
	// MaxStaleness bounds the age of the proof behind [Bus.Proven]: a cache
	// serves from L1 only while its bus can show that every message
	// published up to MaxStaleness ago has been applied. The bus PINGs
	// about every MaxStaleness/2 while readers ask for a proof.
	// Default [DefaultMaxStaleness]; at least 1ms.
	MaxStaleness time.Duration
	// OutboxSize bounds the keys the outbox holds; past it a namespace's
	// keys fold into one purge of the namespace (see outbox.go). Default
	// [DefaultOutboxSize].
	OutboxSize int
	// CloseTimeout bounds how long Close keeps trying to deliver the
	// outbox. Default [DefaultCloseTimeout]; negative means not at all.
	CloseTimeout time.Duration
	// Mode is classic or sharded pub/sub. Default [ModeAuto].
	Mode Mode
	// Logger receives rate-limited reports of gaps, garbled messages and
	// outbox trouble. Default: discard.
	Logger *slog.Logger
}

func (o *Options) withDefaults() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Channel == "" {
		r.Channel = DefaultChannel
	}
	if r.NodeID == "" {
		r.NodeID = rand.Text()[:16]
	}
	if len(r.NodeID) > MaxNodeIDBytes {
		return r, errors.New("pubsub: NodeID longer than MaxNodeIDBytes")
	}
	if r.Mode < ModeAuto || r.Mode > ModeSharded {
		return r, errors.New("pubsub: unknown Mode")
	}
	if r.HealthInterval < 0 || r.MaxStaleness < 0 || r.OutboxSize < 0 {
		return r, errors.New("pubsub: HealthInterval, MaxStaleness and OutboxSize must not be negative")
	}
	if r.MaxStaleness > 0 && r.MaxStaleness < time.Millisecond {
		return r, errors.New("pubsub: MaxStaleness must be at least 1ms")
	}
	if r.HealthInterval == 0 {
		r.HealthInterval = DefaultHealthInterval
	}
	if r.MaxStaleness == 0 {
		r.MaxStaleness = DefaultMaxStaleness
	}
	if r.OutboxSize == 0 {
		r.OutboxSize = DefaultOutboxSize
	}
	if r.CloseTimeout == 0 {
		r.CloseTimeout = DefaultCloseTimeout
	}
	return r, nil
}
