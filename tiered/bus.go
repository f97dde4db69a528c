package tiered

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/pubsub"
)

// A Bus is one process's subscription to the invalidation channel and its
// outbox of invalidations that Redis did not take yet. Every cache of a
// process can share one (Options.Bus), so that the process holds one
// subscription, whatever the number of caches; a cache given none makes
// its own.
//
// A Bus proves L1 fresh: it PINGs on its subscription, and Redis answers a
// PING only after every message published before it, so an answered PING
// shows that every invalidation published before it was applied. A cache
// serves from L1 only while that proof is at most MaxStaleness old (see
// docs/design.md).
//
// A Bus is safe for concurrent use by multiple goroutines.
type Bus struct {
	pb *pubsub.Bus
	// owned is set for the bus a cache made for itself: only that cache
	// closes it.
	owned bool

	mu         sync.Mutex      // guards namespaces and closed
	namespaces map[string]bool // namespaces of the caches using the bus
	closed     bool
}

// BusMode chooses the flavour of Redis pub/sub a [Bus] uses.
type BusMode int

const (
	// BusModeAuto is BusModeSharded on a *redis.ClusterClient and
	// BusModeClassic on any other client. docs/design.md ("Classic or
	// sharded pub/sub on a Cluster") gives the figures behind it.
	BusModeAuto BusMode = iota
	// BusModeClassic publishes with PUBLISH and subscribes with one
	// SUBSCRIBE. On a Cluster every message is relayed to every node.
	BusModeClassic
	// BusModeSharded (Redis 7 and a *redis.ClusterClient) publishes with
	// SPUBLISH on the channel of the written key's hash slot, and
	// subscribes on every master to the slots it serves.
	BusModeSharded
)

// BusOptions configures a [Bus]. A nil *BusOptions means all defaults.
type BusOptions struct {
	// Channel is the Redis channel every node of the fleet uses; nodes on
	// different channels do not hear each other. Default "tiered:bus".
	Channel string

	// NodeID identifies this process in the bus's messages; a node ignores
	// its own. Default: 16 random characters.
	NodeID string

	// HealthInterval: a subscription that has answered nothing for twice
	// this long is replaced by a new connection, and the bus PINGs at
	// least this often. Default 1s.
	HealthInterval time.Duration

	// MaxStaleness bounds how late an invalidation may be applied: a cache
	// serves from L1 only while the bus shows that every message published
	// up to MaxStaleness ago has been applied. Every cache on the bus uses
	// this bound. Default DefaultMaxStaleness (100ms); at least 1ms.
	MaxStaleness time.Duration

	// OutboxSize bounds the keys the outbox holds; past it, a namespace's
	// keys fold into one purge of the namespace. Default 10000.
	OutboxSize int

	// CloseTimeout bounds how long Close keeps delivering the outbox.
	// Default 2s; negative means not at all.
	CloseTimeout time.Duration

	// Mode is classic or sharded pub/sub. Default BusModeAuto.
	Mode BusMode

	// Logger receives rate-limited reports of gaps, garbled messages and
	// outbox trouble. Default: discard.
	Logger *slog.Logger
}

// BusStats are the counters of a [Bus] since it was created.
type BusStats struct {
	Received  uint64 // messages received, including own and garbled ones
	Own       uint64 // messages of this node, ignored
	Garbled   uint64 // messages that did not decode, ignored
	Gaps      uint64 // times the subscription was lost and restored
	Pings     uint64 // PINGs sent on the subscription
	Replaced  uint64 // connections replaced because they went silent or were never confirmed
	Queued    uint64 // keys put in the outbox
	Delivered uint64 // outbox keys delivered
	Dropped   uint64 // outbox keys dropped: expired, folded into a purge, or without a cache
	Purges    uint64 // namespace purges the outbox delivered
	Pending   int    // keys (and namespaces to purge) in the outbox now
}

// NewBus subscribes to the invalidation channel and starts the bus's
// goroutines (receiving, pinging, delivering the outbox); Close stops
// them. It does not wait for Redis: see WaitHealthy. The caches that use
// the bus must share its redis client's server or cluster.
func NewBus(rdb redis.UniversalClient, opts *BusOptions) (*Bus, error) {
	if rdb == nil {
		return nil, invalid("nil redis client")
	}
	var o BusOptions
	if opts != nil {
		o = *opts
	}
	pb, err := pubsub.New(rdb, &pubsub.Options{
		Channel:        o.Channel,
		NodeID:         o.NodeID,
		HealthInterval: o.HealthInterval,
		MaxStaleness:   o.MaxStaleness,
		OutboxSize:     o.OutboxSize,
		CloseTimeout:   o.CloseTimeout,
		Mode:           pubsub.Mode(o.Mode),
		Logger:         o.Logger,
	})
	if err != nil {
		return nil, wrap(err, ErrInvalidOptions)
	}
	return NewBusFrom(pb), nil
}

// NewBusFrom returns a Bus over pb, a bus of the pubsub building block,
// for a program that also registers handlers of its own on pb beside the
// caches (a benchmark timing arrivals, for one). The Bus's Close closes pb.
// Normal use needs NewBus only.
func NewBusFrom(pb *pubsub.Bus) *Bus {
	return &Bus{pb: pb, namespaces: make(map[string]bool)}
}

// attach registers h as the handler of namespace. A namespace has at most
// one cache per bus: a second one would take the first one's values for
// corrupt.
func (b *Bus) attach(namespace string, h pubsub.Handler) (detach func(), err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return nil, invalid("the Bus is closed")
	case b.namespaces[namespace]:
		return nil, invalid("namespace %q already has a cache on this Bus; use that cache, or another namespace", namespace)
	}
	b.namespaces[namespace] = true
	unregister := b.pb.Register(namespace, h)
	return func() {
		unregister()
		b.mu.Lock()
		delete(b.namespaces, namespace)
		b.mu.Unlock()
	}, nil
}

// Close stops the bus's goroutines after delivering what the outbox holds,
// for up to BusOptions.CloseTimeout. It fails with ErrBusInUse, and does
// nothing, while a cache uses the bus: close the caches first. The bus a
// cache made for itself (Cache.Bus, when Options.Bus was nil) is closed by
// that cache's Close. Close is idempotent.
func (b *Bus) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	if n := len(b.namespaces); n > 0 || b.owned {
		return fmt.Errorf("%w: %d cache(s) use it", ErrBusInUse, max(n, 1))
	}
	b.closed = true
	return b.pb.Close()
}

// close closes the bus of a cache that made it for itself.
func (b *Bus) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	_ = b.pb.Close()
}

// Healthy reports whether the subscription is confirmed.
func (b *Bus) Healthy() bool { return b.pb.Healthy() }

// WaitHealthy blocks until the subscription is confirmed. It returns ctx's
// error if ctx ends first, and ErrClosed if the bus is closed.
func (b *Bus) WaitHealthy(ctx context.Context) error {
	if err := b.pb.WaitHealthy(ctx); err != nil {
		if errors.Is(err, pubsub.ErrClosed) {
			return ErrClosed
		}
		return err
	}
	return nil
}

// DownFor returns how long the bus has been unhealthy (since NewBus, or
// since it lost its subscription), or 0 while it is healthy.
func (b *Bus) DownFor() time.Duration { return b.pb.DownFor() }

// ProofAge returns the age of the bus's proof that L1 is fresh, or -1 if
// there is none. L1 serves while it is at most MaxStaleness.
func (b *Bus) ProofAge() time.Duration { return b.pb.ProofAge() }

// MaxStaleness returns the bound of BusOptions.MaxStaleness.
func (b *Bus) MaxStaleness() time.Duration { return b.pb.MaxStaleness() }

// Sharded reports whether the bus uses sharded pub/sub (see BusMode).
func (b *Bus) Sharded() bool { return b.pb.Sharded() }

// NodeID returns the ID this bus puts in its messages.
func (b *Bus) NodeID() string { return b.pb.NodeID() }

// Stats returns the bus's counters.
func (b *Bus) Stats() BusStats { return BusStats(b.pb.Stats()) }
