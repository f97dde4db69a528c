package pubsub

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/mono"
	"github.com/tieredcache/tiered/internal/ratelog"
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

// ErrClosed is returned by WaitHealthy and Flush on a closed Bus.
var ErrClosed = errors.New("pubsub: bus is closed")

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

// Handler receives the messages of one namespace. Its methods run on the
// bus's receiving goroutine, one at a time, and must return quickly.
type Handler interface {
	// Invalidate drops keys from L1, advancing their fill guards, and
	// forgets their flights.
	Invalidate(keys []string)
	// Wake tells waiters for keys to look in Redis again.
	Wake(keys []string)
	// Reset drops all of L1 and forgets every flight: the bus lost its
	// subscription, regained it (and may have missed messages in between),
	// or another node purged the namespace.
	Reset()
}

// A Deliverer is a Handler that also delivers its namespace's outbox
// entries. The outbox delivers a namespace's entries through one of the
// Deliverers registered for it, and drops them when there is none. Deliver
// and Purge run on the outbox goroutine.
type Deliverer interface {
	Handler
	// Deliver makes the invalidation of keys happen: it deletes them from
	// Redis and announces it, as a Delete would. It is bounded by ctx.
	Deliver(ctx context.Context, keys []string) error
	// Purge deletes every key of the namespace from Redis and announces a
	// Flush. The outbox calls it for a namespace whose keys overflowed it.
	Purge(ctx context.Context) error
}

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

type regEntry struct{ h Handler }

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

// Healthy reports whether the subscription is confirmed, so that every
// message published from now on will be delivered (eventually: see Proven).
func (b *Bus) Healthy() bool { return b.healthy.Load() }

// DownFor returns how long the bus has been unhealthy (since New, or since
// it lost its subscription), or 0 while it is healthy.
func (b *Bus) DownFor() time.Duration {
	if b.healthy.Load() {
		return 0
	}
	return time.Duration(mono.Now() - b.downAt.Load())
}

// Proven reports whether the bus has applied every message published up to
// MaxStaleness before now (a mono.Now reading). A cache serves from L1 only
// while it holds. When the proof is more than half that old, Proven asks
// the pinger for a fresh one; it never blocks.
func (b *Bus) Proven(now int64) bool {
	p := b.proof.Load()
	age := now - p
	if age > b.maxStale/2 && !b.hinted.Load() && b.hinted.CompareAndSwap(false, true) {
		select {
		case b.hint <- struct{}{}:
		default:
		}
	}
	return p != 0 && age <= b.maxStale
}

// ProofAge returns how old the proof is, or -1 if there is none.
func (b *Bus) ProofAge() time.Duration {
	p := b.proof.Load()
	if p == 0 {
		return -1
	}
	return time.Duration(mono.Now() - p)
}

// Session returns the number of the current subscription: it changes with
// every confirmed (re)subscription, before the bus reports healthy, and is
// 0 before the first. A cache uses it to tell whether it has checked the
// server since the last gap.
func (b *Bus) Session() uint64 { return b.subscribed.Load() }

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

// deliverer returns one Deliverer registered for namespace, or nil.
func (b *Bus) deliverer(namespace string) Deliverer {
	b.mu.Lock()
	defer b.mu.Unlock()
	for e := range b.handlers[namespace] {
		if d, ok := e.h.(Deliverer); ok {
			return d
		}
	}
	return nil
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

// resetHandlers calls Reset on every handler, or on those of one namespace.
func (b *Bus) resetHandlers(namespace string, all bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ns, hs := range b.handlers {
		if all || ns == namespace {
			for e := range hs {
				e.h.Reset()
			}
		}
	}
}

// setDown withdraws the proof, marks the bus unhealthy and resets every
// handler: flights that began before the gap must not be joined by readers
// who came after a write the bus did not hear.
func (b *Bus) setDown() {
	b.proof.Store(0)
	b.mu.Lock()
	wasUp := b.healthy.Load()
	if wasUp {
		b.downAt.Store(mono.Now())
		b.healthy.Store(false)
		b.up = make(chan struct{})
	}
	b.mu.Unlock()
	if wasUp {
		b.resetHandlers("", true)
	}
}

// setUp resets every handler, then reports healthy; the proof follows with
// the first PONG.
func (b *Bus) setUp() {
	b.resetHandlers("", true)
	b.mu.Lock()
	if !b.healthy.Load() {
		b.healthy.Store(true)
		close(b.up)
	}
	b.mu.Unlock()
	b.askPing()
	b.Redeliver()
}

func (b *Bus) askPing() {
	b.hinted.Store(true)
	select {
	case b.hint <- struct{}{}:
	default:
	}
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

var (
	errSilent       = errors.New("pubsub: subscription silent for two health intervals")
	errNotConfirmed = errors.New("pubsub: subscription not confirmed within a health interval")
)

// pinger sends PINGs on the subscription connections, each carrying its
// send time: when a reader asks for a fresher proof (at most one PING per
// quarter of MaxStaleness, or per HealthInterval if that is shorter) and
// at least every HealthInterval, which is what detects a silent connection. Requests that arrive while a PING is in
// flight or during the quarter after it are coalesced: hinted stays set
// until then, so readers do not ask again.
func (b *Bus) pinger(ctx context.Context) {
	defer close(b.pingers)
	idle := time.NewTimer(b.o.HealthInterval)
	defer idle.Stop()
	// The coalescing gap never exceeds HealthInterval: the PINGs are also
	// what keeps a healthy, idle subscription from looking silent.
	gap := min(b.o.MaxStaleness/4, b.o.HealthInterval)
	for {
		asked := false
		select {
		case <-ctx.Done():
			return
		case <-b.hint:
			asked = true
		case <-idle.C:
		}
		if asked && b.proof.Load() != 0 && mono.Now()-b.proof.Load() <= b.maxStale/2 {
			b.hinted.Store(false) // a PONG answered it meanwhile
			continue
		}
		b.mu.Lock()
		sess := b.sess
		b.mu.Unlock()
		idle.Reset(b.o.HealthInterval)
		if sess == nil {
			// Nothing to ping yet; hinted stays set, and setUp asks for a
			// PING as soon as a session is confirmed.
			continue
		}
		b.pings.Add(1)
		pctx, cancel := context.WithTimeout(ctx, b.o.HealthInterval)
		sent := strconv.FormatInt(mono.Now(), 10)
		for _, sh := range sess.shards {
			_ = sh.ps.Ping(pctx, sent)
		}
		cancel()
		t := time.NewTimer(gap)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		b.hinted.Store(false)
	}
}

func (b *Bus) dispatch(payload string) {
	b.received.Add(1)
	m, err := Decode([]byte(payload))
	if err != nil {
		b.garbled.Add(1)
		b.log.Log(slog.LevelWarn, "pubsub: ignoring garbled message", err, slog.String("channel", b.o.Channel))
		return
	}
	if m.NodeID == b.o.NodeID {
		b.own.Add(1)
		return
	}
	if m.Kind == Flush {
		b.resetHandlers(m.Namespace, false)
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
