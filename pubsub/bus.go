package pubsub

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/ratelog"
)

// Defaults for [Options].
const (
	// DefaultChannel is the Redis channel of the bus.
	DefaultChannel = "tiered:bus"
	// DefaultHealthInterval is how long the subscription may be silent
	// before the bus sends a PING; a PING unanswered for another interval
	// marks the bus unhealthy and replaces the connection.
	DefaultHealthInterval = time.Second
)

// ErrClosed is returned by WaitHealthy on a closed Bus.
var ErrClosed = errors.New("pubsub: bus is closed")

// Options configures a [Bus]. A nil *Options means all defaults.
type Options struct {
	// Channel is the Redis channel every node of the fleet uses.
	// Default [DefaultChannel].
	Channel string
	// NodeID identifies this process in messages; a node ignores its own.
	// Default: 16 random characters.
	NodeID string
	// HealthInterval: see [DefaultHealthInterval], the default. A
	// connection that dies silently is detected within twice this.
	HealthInterval time.Duration
	// Logger receives rate-limited reports of gaps and garbled messages.
	// Default: discard.
	Logger *slog.Logger
}

// Handler receives the messages of one namespace. Its methods run on the
// bus's goroutine, one at a time, and must return quickly.
type Handler interface {
	// Invalidate drops keys from L1, advancing their fill guards.
	Invalidate(keys []string)
	// Wake tells waiters for keys to look in Redis again.
	Wake(keys []string)
	// Reset drops all of L1: the bus may have missed messages.
	Reset()
}

// Stats are counters of a [Bus] since it was created.
type Stats struct {
	Received uint64 // messages received, including own and garbled ones
	Own      uint64 // messages of this node, ignored
	Garbled  uint64 // messages that did not decode, ignored
	Gaps     uint64 // times the subscription was lost and restored
}

// Bus is one process's subscription to the invalidation channel, shared by
// every cache registered with it.
//
// Healthy reports whether the subscription is known to be live. Caches must
// not serve from L1 while it is not: an invalidation published then cannot be
// heard. Every (re)subscription confirmed by Redis resets every registered
// handler before the bus reports healthy again, so whatever was missed during
// a gap is dropped from L1.
//
// A Bus is safe for concurrent use by multiple goroutines.
type Bus struct {
	rdb      redis.UniversalClient
	channel  string
	nodeID   string
	interval time.Duration
	log      *ratelog.Limiter

	healthy atomic.Bool

	mu       sync.Mutex                    // guards the fields below
	handlers map[string]map[*regEntry]bool // by namespace
	up       chan struct{}                 // closed while healthy
	ps       *redis.PubSub                 // the current subscription
	closed   bool

	received, own, garbled atomic.Uint64
	subscribed             atomic.Uint64 // subscription confirmations; every one after the first ends a gap

	cancel context.CancelFunc
	done   chan struct{}
}

type regEntry struct{ h Handler }

// New subscribes to the channel and starts the bus goroutine; Close stops
// it. The bus reports unhealthy until Redis confirms the subscription; use
// WaitHealthy to wait for it.
func New(rdb redis.UniversalClient, opts *Options) (*Bus, error) {
	if rdb == nil {
		return nil, errors.New("pubsub: nil redis client")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Channel == "" {
		o.Channel = DefaultChannel
	}
	if o.NodeID == "" {
		o.NodeID = rand.Text()[:16]
	}
	if len(o.NodeID) > MaxNodeIDBytes {
		return nil, errors.New("pubsub: NodeID longer than MaxNodeIDBytes")
	}
	if o.HealthInterval < 0 {
		return nil, errors.New("pubsub: HealthInterval must not be negative")
	}
	if o.HealthInterval == 0 {
		o.HealthInterval = DefaultHealthInterval
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{
		rdb:      rdb,
		channel:  o.Channel,
		nodeID:   o.NodeID,
		interval: o.HealthInterval,
		log:      ratelog.New(o.Logger, 5*time.Second),
		handlers: make(map[string]map[*regEntry]bool),
		up:       make(chan struct{}),
		cancel:   cancel,
		done:     make(chan struct{}),
	}
	go b.run(ctx)
	return b, nil
}

// NodeID returns the ID this bus puts in its messages.
func (b *Bus) NodeID() string { return b.nodeID }

// Channel returns the Redis channel of the bus.
func (b *Bus) Channel() string { return b.channel }

// Healthy reports whether the subscription is live, so that every message
// published from now on will be delivered.
func (b *Bus) Healthy() bool { return b.healthy.Load() }

// WaitHealthy blocks until the bus is healthy, ctx is done (returning its
// error), or the bus is closed ([ErrClosed]).
func (b *Bus) WaitHealthy(ctx context.Context) error {
	for {
		b.mu.Lock()
		up, closed := b.up, b.closed
		b.mu.Unlock()
		if closed {
			return ErrClosed
		}
		select {
		case <-up:
			if b.Healthy() {
				return nil
			}
		case <-b.done:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stats returns the bus counters.
func (b *Bus) Stats() Stats {
	s := Stats{Received: b.received.Load(), Own: b.own.Load(), Garbled: b.garbled.Load()}
	if n := b.subscribed.Load(); n > 1 {
		s.Gaps = n - 1
	}
	return s
}

// Encode encodes an announcement from this node; see [Encode].
func (b *Bus) Encode(kind Kind, namespace string, keys []string) ([][]byte, error) {
	return Encode(Message{Kind: kind, NodeID: b.nodeID, Namespace: namespace, Keys: keys})
}

// Register adds h for namespace and returns the function that removes it.
// Several handlers may share a namespace.
func (b *Bus) Register(namespace string, h Handler) (unregister func()) {
	e := &regEntry{h: h}
	b.mu.Lock()
	if b.handlers[namespace] == nil {
		b.handlers[namespace] = make(map[*regEntry]bool)
	}
	b.handlers[namespace][e] = true
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		delete(b.handlers[namespace], e)
		if len(b.handlers[namespace]) == 0 {
			delete(b.handlers, namespace)
		}
		b.mu.Unlock()
	}
}

// Close stops the bus goroutine and closes the subscription. It is
// idempotent and always returns nil.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.done
		return nil
	}
	b.closed = true
	ps := b.ps
	b.mu.Unlock()
	b.cancel()
	if ps != nil {
		_ = ps.Close() // unblocks a pending receive
	}
	<-b.done
	return nil
}

func (b *Bus) setDown() {
	if !b.healthy.Load() {
		return
	}
	b.mu.Lock()
	b.healthy.Store(false)
	b.up = make(chan struct{})
	b.mu.Unlock()
}

// setUp resets every handler, then reports healthy.
func (b *Bus) setUp() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, hs := range b.handlers {
		for e := range hs {
			e.h.Reset()
		}
	}
	if !b.healthy.Load() {
		b.healthy.Store(true)
		close(b.up)
	}
}

// run owns the subscription. It returns when ctx is cancelled by Close.
func (b *Bus) run(ctx context.Context) {
	defer close(b.done)
	defer b.setDown()
	backoff := newBackoff()
	for ctx.Err() == nil {
		ps := b.rdb.Subscribe(ctx, b.channel)
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			_ = ps.Close()
			return
		}
		b.ps = ps
		b.mu.Unlock()
		b.receive(ctx, ps, backoff)
		b.mu.Lock()
		b.ps = nil
		b.mu.Unlock()
		_ = ps.Close()
		backoff.wait(ctx)
	}
}

// receive reads from ps until ctx is done or ps must be replaced because a
// PING went unanswered.
func (b *Bus) receive(ctx context.Context, ps *redis.PubSub, bo *backoff) {
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, b.interval)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && b.Healthy() {
				if pinged {
					// Silent for two intervals, PING unanswered: the
					// connection is dead or the server is stuck.
					b.setDown()
					b.log.Log(slog.LevelWarn, "pubsub: no PONG, reconnecting", nil, slog.String("channel", b.channel))
					return
				}
				if perr := ps.Ping(ctx); perr == nil {
					pinged = true
					continue
				}
			}
			// A broken connection: go-redis reconnects and resubscribes on
			// the next receive; the confirmation ends the gap.
			b.setDown()
			b.log.Log(slog.LevelWarn, "pubsub: subscription lost", err, slog.String("channel", b.channel))
			bo.wait(ctx)
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == b.channel {
				b.subscribed.Add(1)
				b.setUp()
				bo.reset()
			}
		case *redis.Message:
			b.dispatch(m.Payload)
		case *redis.Pong:
		}
	}
}

func (b *Bus) dispatch(payload string) {
	b.received.Add(1)
	m, err := Decode([]byte(payload))
	if err != nil {
		b.garbled.Add(1)
		b.log.Log(slog.LevelWarn, "pubsub: ignoring garbled message", err, slog.String("channel", b.channel))
		return
	}
	if m.NodeID == b.nodeID {
		b.own.Add(1)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for e := range b.handlers[m.Namespace] {
		switch m.Kind {
		case Invalidate:
			e.h.Invalidate(m.Keys)
		case Wake:
			e.h.Wake(m.Keys)
		}
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
