package pubsub

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/tieredcache/tiered/internal/mono"
)

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

var (
	errSilent       = errors.New("pubsub: subscription silent for two health intervals")
	errNotConfirmed = errors.New("pubsub: subscription not confirmed within a health interval")
)

// pinger sends PINGs on the subscription connections, each carrying its
// send time: when a reader asks for a fresher proof (at most one PING per
// quarter of MaxStaleness, or per HealthInterval if that is shorter) and
// at least every HealthInterval, which is what detects a silent
// connection. Requests that arrive while a PING is in flight or during the
// quarter after it are coalesced: hinted stays set until then, so readers
// do not ask again.
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
