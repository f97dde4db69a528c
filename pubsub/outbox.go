package pubsub

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tieredcache/tiered/internal/mono"
)

// The outbox holds invalidations that a write could not deliver: keys that
// were written (or may have been: a failed call may have reached Redis with
// only its reply lost) and whose other copies, in Redis and in other nodes'
// L1, are therefore suspect. One goroutine delivers them, through the
// Deliverer of their namespace (Deliverer.Deliver: delete from Redis and
// announce), with backoff, as soon as Redis answers.
//
// Rules:
//   - One entry per key: a key queued again while pending is one delivery.
//     Entries are invalidations, never values: delivering an old value late
//     could overwrite a newer write, while deleting late costs a miss.
//   - An entry expires at the deadline its writer gave, the latest moment a
//     copy of the key written before the write can still exist (its TTL has
//     passed everywhere); it is then dropped, undelivered and harmless.
//   - The outbox holds at most size keys. A key that does not fit folds its
//     whole namespace into one purge: the namespace's entries are dropped and
//     the namespace is purged from Redis (Deliverer.Purge: SCAN and UNLINK,
//     then a Flush message that makes every node drop the namespace's L1).
//   - A delivery attempt has deliverTimeout, longer than a read's
//     OpTimeout, so that while Redis is paused an attempt is waiting in its
//     queue and lands the moment it resumes. Failures back off from
//     backoffMin to backoffMax; a sign that Redis answers again (the bus
//     resubscribed, a cache's breaker closed: Redeliver) ends the backoff.
//   - While a key (or its namespace's purge) is pending, Pending reports it:
//     the cache then serves it from neither L1 nor Redis.
//   - Close keeps delivering for up to Options.CloseTimeout; what is left
//     is dropped and counted.
const (
	deliverTimeout = time.Second
	deliverBatch   = 512
	backoffMin     = 10 * time.Millisecond
	backoffMax     = 250 * time.Millisecond
)

type nsKey struct{ ns, key string }

type outboxEntry struct {
	until int64  // mono time after which the entry may be dropped
	seq   uint64 // bumped when the key is queued again, so a delivery that began before is not taken for this one
}

type outbox struct {
	b       *Bus
	size    int
	maxWait time.Duration // backoffMax; tests raise it

	n atomic.Int64 // len(keys) + len(purge): the read path's fast test

	mu      sync.Mutex // guards the fields below
	keys    map[nsKey]outboxEntry
	purge   map[string]bool // namespaces folded into a purge
	seq     uint64
	changed chan struct{} // closed and replaced whenever entries leave
	closing bool
	until   time.Time // with closing: when to give up

	kick    chan struct{} // capacity 1: something was queued
	retry   chan struct{} // capacity 1: Redis answers again, cut the backoff short
	closeCh chan struct{} // closed by close
	done    chan struct{} // closed when run returns

	queued, delivered, dropped, purges atomic.Uint64
}

func newOutbox(b *Bus, size int) *outbox {
	return &outbox{
		b: b, size: size, maxWait: backoffMax,
		keys:    make(map[nsKey]outboxEntry),
		purge:   make(map[string]bool),
		changed: make(chan struct{}),
		kick:    make(chan struct{}, 1),
		retry:   make(chan struct{}, 1),
		closeCh: make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Queue puts the invalidation of keys of namespace in the outbox. until
// is the time after which no copy of the keys written before now can
// exist anywhere; the entry is then dropped.
func (b *Bus) Queue(namespace string, keys []string, until time.Time) {
	o := b.outbox
	u := mono.Now() + int64(time.Until(until))
	o.mu.Lock()
	for _, k := range keys {
		o.queued.Add(1)
		if o.purge[namespace] {
			continue // the purge covers it
		}
		nk := nsKey{namespace, k}
		e, ok := o.keys[nk]
		if !ok && len(o.keys) >= o.size {
			o.foldLocked(namespace)
			continue
		}
		o.seq++
		o.keys[nk] = outboxEntry{until: max(e.until, u), seq: o.seq}
	}
	o.n.Store(int64(len(o.keys) + len(o.purge)))
	o.mu.Unlock()
	o.b.log.Log(slog.LevelWarn, "pubsub: invalidation queued in the outbox", nil,
		slog.String("namespace", namespace), slog.Int("keys", len(keys)))
	o.wake()
}

// QueuePurge puts the purge of namespace in the outbox (see the rules
// above): a write that must drop the whole namespace and could not. The
// namespace's queued keys are folded into it. Until it is delivered,
// Pending reports every key of namespace.
func (b *Bus) QueuePurge(namespace string) {
	o := b.outbox
	o.mu.Lock()
	if !o.purge[namespace] {
		o.purge[namespace] = true
		for nk := range o.keys {
			if nk.ns == namespace {
				delete(o.keys, nk)
				o.delivered.Add(1) // covered by the purge, not lost
			}
		}
	}
	o.queued.Add(1)
	o.changedLocked()
	o.mu.Unlock()
	o.b.log.Log(slog.LevelWarn, "pubsub: purge of the namespace queued in the outbox", nil,
		slog.String("namespace", namespace))
	o.wake()
}

// Redeliver tells the outbox that Redis answers again, so that a delivery
// waiting out its backoff is tried at once. The bus calls it when it
// resubscribes; a cache calls it when its breaker closes.
func (b *Bus) Redeliver() {
	select {
	case b.outbox.retry <- struct{}{}:
	default:
	}
}

// foldLocked replaces namespace's entries with one purge.
func (o *outbox) foldLocked(namespace string) {
	o.purge[namespace] = true
	for nk := range o.keys {
		if nk.ns == namespace {
			delete(o.keys, nk)
			o.dropped.Add(1)
		}
	}
	o.b.log.Log(slog.LevelError, "pubsub: outbox full, the namespace will be purged from redis", nil,
		slog.String("namespace", namespace), slog.Int("size", o.size))
}

func (o *outbox) wake() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// Pending reports whether the invalidation of key in namespace is in the
// outbox (or its namespace's purge is). It is one atomic load while the
// outbox is empty.
func (b *Bus) Pending(namespace, key string) bool {
	o := b.outbox
	if o.n.Load() == 0 {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.pendingLocked(namespace, key)
}

func (o *outbox) pendingLocked(namespace, key string) bool {
	if o.purge[namespace] {
		return true
	}
	_, ok := o.keys[nsKey{namespace, key}]
	return ok
}

// WaitDelivered blocks until none of keys of namespace is pending (nil),
// ctx ends (its error), or the bus is closed (ErrClosed; what was pending
// is then dropped).
func (b *Bus) WaitDelivered(ctx context.Context, namespace string, keys []string) error {
	return b.outbox.wait(ctx, func() bool {
		for _, k := range keys {
			if b.outbox.pendingLocked(namespace, k) {
				return true
			}
		}
		return false
	})
}

// Flush waits until nothing of namespace is pending, ctx ends, or the bus
// is closed. A cache calls it from Close, before it unregisters.
func (b *Bus) Flush(ctx context.Context, namespace string) error {
	return b.outbox.wait(ctx, func() bool {
		if b.outbox.purge[namespace] {
			return true
		}
		for nk := range b.outbox.keys {
			if nk.ns == namespace {
				return true
			}
		}
		return false
	})
}

// wait blocks until pendingLocked, called with mu held, reports false (nil),
// ctx ends, or the outbox is done while something is still pending.
func (o *outbox) wait(ctx context.Context, pendingLocked func() bool) error {
	for {
		o.mu.Lock()
		pending, ch := pendingLocked(), o.changed
		o.mu.Unlock()
		if !pending {
			return nil
		}
		select {
		case <-ch:
		case <-o.done:
			o.mu.Lock()
			pending = pendingLocked()
			o.mu.Unlock()
			if pending {
				return ErrClosed
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (o *outbox) stats(s *Stats) {
	s.Queued, s.Delivered, s.Dropped, s.Purges = o.queued.Load(), o.delivered.Load(), o.dropped.Load(), o.purges.Load()
	s.Pending = int(o.n.Load())
}

// close makes run deliver for up to timeout more, then return, and waits.
func (o *outbox) close(timeout time.Duration) {
	o.mu.Lock()
	o.closing, o.until = true, time.Now().Add(max(timeout, 0))
	o.mu.Unlock()
	close(o.closeCh)
	<-o.done
}

// changedLocked publishes a change of the entries to waiters.
func (o *outbox) changedLocked() {
	o.n.Store(int64(len(o.keys) + len(o.purge)))
	close(o.changed)
	o.changed = make(chan struct{})
}
