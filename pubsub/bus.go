package pubsub

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/mono"
	"github.com/tieredcache/tiered/internal/ratelog"
)

// ErrClosed is returned by WaitHealthy and Flush on a closed Bus.
var ErrClosed = errors.New("pubsub: bus is closed")

// Stats are counters of a [Bus] since it was created.
type Stats struct {
	Received  uint64 // messages received, including own and garbled ones
	Own       uint64 // messages of this node, ignored
	Garbled   uint64 // messages that did not decode, ignored
	Gaps      uint64 // times the subscription was lost and restored
	Pings     uint64 // PINGs sent on the subscription
	Replaced  uint64 // connections replaced because they went silent or were never confirmed
	Queued    uint64 // keys put in the outbox
	Delivered uint64 // outbox keys delivered
	Dropped   uint64 // outbox keys dropped: expired, folded into a purge, or without a handler
	Purges    uint64 // namespace purges the outbox delivered
	Pending   int    // keys (and namespaces to purge) in the outbox now
}

// Bus is one process's subscription to the invalidation channel, shared by
// every cache registered with it, and its outbox of invalidations that
// could not be delivered yet.
//
// # Health and proof
//
// Healthy reports whether the subscription is confirmed. Every confirmation
// (and every loss) resets every registered handler, so whatever was missed
// during a gap is dropped from L1. Healthy is not enough to serve from L1: a
// subscription can be live and still deliver late (its goroutine starved of
// CPU, a paused server, a connection gone silent). [Bus.Proven] is the test
// for that: the bus sends PINGs on the subscription connection carrying the
// time they were sent, and Redis answers a PING only after every message
// published before it, on the same connection. When the receiving goroutine
// handles a PONG it has therefore applied everything published before the
// PING was sent, and the PING's send time becomes the proof. Proven(now)
// holds while that proof is at most MaxStaleness old.
//
// A Bus is safe for concurrent use by multiple goroutines.
type Bus struct {
	rdb      redis.UniversalClient
	cluster  *redis.ClusterClient // rdb, when it is one
	sharded  bool                 // sessions use sharded pub/sub (Mode)
	o        Options
	maxStale int64 // o.MaxStaleness in ns
	log      *ratelog.Limiter

	// proof is the mono time at which the newest answered PING was sent,
	// 0 while the bus is unhealthy. Written by the receiving goroutine.
	proof   atomic.Int64
	healthy atomic.Bool
	downAt  atomic.Int64  // mono time the bus last became unhealthy (or was created)
	hinted  atomic.Bool   // a reader asked for a fresh proof; cleared by the pinger
	hint    chan struct{} // wakes the pinger; capacity 1

	mu       sync.Mutex                    // guards the fields below
	handlers map[string]map[*regEntry]bool // by namespace
	up       chan struct{}                 // closed while healthy
	sess     *session                      // the current subscription, or nil
	closed   bool

	outbox *outbox

	received, own, garbled, pings, replaced atomic.Uint64
	subscribed                              atomic.Uint64 // subscription confirmations; every one after the first ends a gap

	cancel  context.CancelFunc
	done    chan struct{} // closed when the receiving goroutine returns
	pingers chan struct{} // closed when the pinger returns
}

// New subscribes to the channel and starts the bus's goroutines (receiving,
// pinging, delivering the outbox); Close stops them. The bus reports
// unhealthy until Redis confirms the subscription; use WaitHealthy to wait
// for it.
func New(rdb redis.UniversalClient, opts *Options) (*Bus, error) {
	if rdb == nil {
		return nil, errors.New("pubsub: nil redis client")
	}
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	cluster, _ := rdb.(*redis.ClusterClient)
	sharded := cluster != nil && o.Mode != ModeClassic
	switch {
	case o.Mode == ModeSharded && cluster == nil:
		return nil, errors.New("pubsub: ModeSharded needs a *redis.ClusterClient")
	case sharded && strings.ContainsAny(o.Channel, "{}"):
		return nil, errors.New("pubsub: a sharded bus's Channel must not contain '{' or '}': they would replace the slot's hash tag")
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{
		rdb:      rdb,
		cluster:  cluster,
		sharded:  sharded,
		o:        o,
		maxStale: int64(o.MaxStaleness),
		log:      ratelog.New(o.Logger, 5*time.Second),
		hint:     make(chan struct{}, 1),
		handlers: make(map[string]map[*regEntry]bool),
		up:       make(chan struct{}),
		cancel:   cancel,
		done:     make(chan struct{}),
		pingers:  make(chan struct{}),
	}
	b.outbox = newOutbox(b, o.OutboxSize)
	b.downAt.Store(mono.Now())
	go b.run(ctx)
	go b.pinger(ctx)
	go b.outbox.run()
	return b, nil
}

// NodeID returns the ID this bus puts in its messages.
func (b *Bus) NodeID() string { return b.o.NodeID }

// Channel returns the Redis channel of the bus: in sharded mode, the base
// of the slot channels.
func (b *Bus) Channel() string { return b.o.Channel }

// Sharded reports whether the bus uses sharded pub/sub: writers must then
// publish with SPUBLISH on the channel of their key's slot (l2.Announce's
// Sharded).
func (b *Bus) Sharded() bool { return b.sharded }

// MaxStaleness returns the bound Proven checks the proof against.
func (b *Bus) MaxStaleness() time.Duration { return b.o.MaxStaleness }

// Stats returns the bus counters.
func (b *Bus) Stats() Stats {
	s := Stats{
		Received: b.received.Load(), Own: b.own.Load(), Garbled: b.garbled.Load(),
		Pings: b.pings.Load(), Replaced: b.replaced.Load(),
	}
	if n := b.subscribed.Load(); n > 1 {
		s.Gaps = n - 1
	}
	b.outbox.stats(&s)
	return s
}

// Encode encodes an announcement from this node; see [Encode].
func (b *Bus) Encode(kind Kind, namespace string, keys []string) ([][]byte, error) {
	return Encode(Message{Kind: kind, NodeID: b.o.NodeID, Namespace: namespace, Keys: keys})
}

// Close stops the bus's goroutines and closes the subscription, after
// trying for up to CloseTimeout to deliver what is in the outbox. It is
// idempotent and always returns nil.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.done
		<-b.outbox.done
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.outbox.close(b.o.CloseTimeout)
	b.cancel()
	b.mu.Lock()
	s := b.sess
	b.mu.Unlock()
	if s != nil {
		s.close() // unblocks a pending receive
	}
	<-b.done
	<-b.pingers
	return nil
}

// run owns the subscription: one session at a time, replaced whenever one
// of its connections fails, goes silent or is never confirmed. It returns
// when ctx is cancelled by Close.
func (b *Bus) run(ctx context.Context) {
	defer close(b.done)
	defer b.setDown()
	backoff := newBackoff()
	for ctx.Err() == nil {
		s, err := b.open(ctx)
		if err == nil {
			b.mu.Lock()
			if b.closed {
				b.mu.Unlock()
				s.close()
				return
			}
			b.sess = s
			b.mu.Unlock()
			err = b.serve(ctx, s, backoff)
			b.mu.Lock()
			b.sess = nil
			b.mu.Unlock()
			s.close()
		}
		b.setDown()
		if ctx.Err() != nil {
			return
		}
		b.log.Log(slog.LevelWarn, "pubsub: subscription lost, reconnecting", err, slog.String("channel", b.o.Channel))
		if b.cluster != nil {
			// A master may have failed over, or a slot moved: have the
			// client fetch the slot map again before the next session
			// routes by it (go-redis does not on a refused dial).
			b.cluster.ReloadState(ctx)
		}
		backoff.wait(ctx)
	}
}

type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 50 * time.Millisecond} }

func (b *backoff) reset() { b.d = 50 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) {
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	b.d = min(2*b.d, time.Second)
}
