package pubsub

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tieredcache/tiered/internal/redistest"
)

// outboxBus returns a bus over a fresh miniredis (the outbox itself does
// not talk to Redis: its Deliverer does) and a recorder registered as the
// Deliverer of "ns".
func outboxBus(t *testing.T, opts *Options) (*Bus, *recorder) {
	t.Helper()
	b := startBus(t, redistest.Mini(t).Addr, opts)
	r := newRecorder(b)
	b.Register("ns", r)
	return b, r
}

func waitDelivered(t *testing.T, b *Bus, keys ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := b.WaitDelivered(ctx, "ns", keys); err != nil {
		t.Fatalf("WaitDelivered(%q) = %v", keys, err)
	}
}

// TestOutboxDelivers: a queued key is pending until its Deliverer
// succeeded, failures are retried with backoff, and the counters say so.
func TestOutboxDelivers(t *testing.T) {
	t.Parallel()
	b, r := outboxBus(t, nil)
	var fails atomic.Int32
	fails.Store(3)
	r.deliver = func(context.Context, []string) error {
		if fails.Add(-1) >= 0 {
			return errors.New("redis down")
		}
		return nil
	}
	if b.Pending("ns", "k") {
		t.Fatal("pending before anything was queued")
	}
	b.Queue("ns", []string{"k", "j"}, time.Now().Add(time.Hour))
	if !b.Pending("ns", "k") || !b.Pending("ns", "j") || b.Pending("ns", "other") || b.Pending("other", "k") {
		t.Fatal("Pending does not match what was queued")
	}
	waitDelivered(t, b, "k", "j")
	if b.Pending("ns", "k") {
		t.Fatal("pending after delivery")
	}
	attempts := 0
	for _, e := range r.pending() {
		if e.op == "deliver" {
			attempts++
			if len(e.keys) != 2 {
				t.Fatalf("delivery of %q, want both keys in one batch", e.keys)
			}
		}
	}
	if attempts != 4 {
		t.Fatalf("%d delivery attempts, want 3 failures and 1 success", attempts)
	}
	if s := b.Stats(); s.Queued != 2 || s.Delivered != 2 || s.Dropped != 0 || s.Pending != 0 {
		t.Fatalf("Stats = %+v", s)
	}
}

// TestOutboxRedeliver: Redeliver ends a delivery's backoff at once: with
// the backoff raised to a minute, the key is still delivered right after
// Redis "answers again".
func TestOutboxRedeliver(t *testing.T) {
	t.Parallel()
	b, r := outboxBus(t, nil)
	b.outbox.maxWait = time.Minute
	var up atomic.Bool
	var attempts atomic.Int32
	r.deliver = func(context.Context, []string) error {
		attempts.Add(1)
		if !up.Load() {
			return errors.New("redis down")
		}
		return nil
	}
	b.Queue("ns", []string{"k"}, time.Now().Add(time.Hour))
	deadline := time.Now().Add(waitTimeout)
	for attempts.Load() < 8 { // the backoff is now over a second
		if time.Now().After(deadline) {
			t.Fatal("the outbox stopped retrying")
		}
		time.Sleep(10 * time.Millisecond)
	}
	up.Store(true)
	b.Redeliver()
	waitDelivered(t, b, "k")
}

// TestOutboxNewestPerKey: a key queued again while its delivery is running
// stays pending (the running delivery may predate the new write) and is
// delivered once more; a key queued twice before delivery is delivered
// once.
func TestOutboxNewestPerKey(t *testing.T) {
	t.Parallel()
	b, r := outboxBus(t, nil)
	started, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	r.deliver = func(context.Context, []string) error {
		if calls.Add(1) == 1 {
			close(started)
			<-release
		}
		return nil
	}
	far := time.Now().Add(time.Hour)
	b.Queue("ns", []string{"k"}, far)
	<-started
	b.Queue("ns", []string{"k"}, far) // during the first delivery
	b.Queue("ns", []string{"k"}, far) // and again: one entry
	close(release)
	waitDelivered(t, b, "k")
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d deliveries, want 2: the one running and one for the writes during it", n)
	}
}

// TestOutboxOverflow: a key that does not fit folds its namespace into one
// purge; every key of the namespace is pending until the purge is
// delivered, and other namespaces keep their entries.
func TestOutboxOverflow(t *testing.T) {
	t.Parallel()
	b, r := outboxBus(t, &Options{OutboxSize: 3})
	other := newRecorder(b)
	b.Register("other", other)
	hold := make(chan struct{})
	r.deliver = func(context.Context, []string) error { <-hold; return nil }
	other.deliver = func(context.Context, []string) error { <-hold; return nil }
	r.purge = func(context.Context) error { <-hold; return nil }
	far := time.Now().Add(time.Hour)
	b.Queue("other", []string{"o"}, far)
	b.Queue("ns", []string{"a", "b"}, far)
	b.Queue("ns", []string{"c"}, far) // the fourth key: ns folds into a purge
	if !b.Pending("ns", "never-queued") {
		t.Fatal("a key of a namespace being purged is not pending")
	}
	if !b.Pending("other", "o") || b.Pending("other", "x") {
		t.Fatal("the other namespace's entries changed")
	}
	if s := b.Stats(); s.Dropped != 2 {
		t.Fatalf("Stats.Dropped = %d, want the 2 keys folded into the purge", s.Dropped)
	}
	close(hold)
	waitDelivered(t, b, "a", "b", "c", "never-queued")
	ops := map[string]int{}
	for _, e := range r.pending() {
		ops[e.op]++
	}
	if ops["purge"] != 1 || ops["deliver"] != 0 {
		t.Fatalf("calls %v, want one purge and no key deliveries", ops)
	}
	if s := b.Stats(); s.Purges != 1 {
		t.Fatalf("Stats.Purges = %d, want 1", s.Purges)
	}
}

// TestOutboxDrops: an entry past its deadline is dropped undelivered, and
// so is one whose namespace has no Deliverer (a plain Handler does not
// count).
func TestOutboxDrops(t *testing.T) {
	t.Parallel()
	b, r := outboxBus(t, nil)
	r.deliver = func(context.Context, []string) error { return errors.New("down") }
	b.Queue("ns", []string{"k"}, time.Now().Add(50*time.Millisecond))
	waitDelivered(t, b, "k")
	b.Register("listen-only", listener{})
	b.Queue("listen-only", []string{"k"}, time.Now().Add(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := b.WaitDelivered(ctx, "listen-only", []string{"k"}); err != nil {
		t.Fatal(err)
	}
	if s := b.Stats(); s.Dropped != 2 || s.Delivered != 0 {
		t.Fatalf("Stats = %+v, want 2 dropped, none delivered", s)
	}
}

type listener struct{}

func (listener) Invalidate([]string) {}
func (listener) Wake([]string)       {}
func (listener) Reset()              {}

// TestOutboxClose: Close delivers what it can within CloseTimeout, then
// drops the rest and returns.
func TestOutboxClose(t *testing.T) {
	t.Parallel()
	t.Run("delivers", func(t *testing.T) {
		t.Parallel()
		b, r := outboxBus(t, nil)
		var once atomic.Bool
		r.deliver = func(context.Context, []string) error {
			if once.CompareAndSwap(false, true) {
				return errors.New("first attempt fails")
			}
			return nil
		}
		b.Queue("ns", []string{"k"}, time.Now().Add(time.Hour))
		b.Close()
		if s := b.Stats(); s.Delivered != 1 || s.Pending != 0 {
			t.Fatalf("after Close: Stats = %+v, want the key delivered", s)
		}
	})
	t.Run("gives up", func(t *testing.T) {
		t.Parallel()
		const closeTimeout = 200 * time.Millisecond
		b, r := outboxBus(t, &Options{CloseTimeout: closeTimeout})
		r.deliver = func(ctx context.Context, _ []string) error { <-ctx.Done(); return ctx.Err() }
		b.Queue("ns", []string{"k"}, time.Now().Add(time.Hour))
		start := time.Now()
		b.Close()
		if d := time.Since(start); d > closeTimeout+2*time.Second {
			t.Fatalf("Close took %v with a CloseTimeout of %v", d, closeTimeout)
		}
		if s := b.Stats(); s.Dropped != 1 || s.Pending != 0 {
			t.Fatalf("after Close: Stats = %+v, want the key dropped", s)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := b.Flush(ctx, "ns"); err != nil {
			t.Fatalf("Flush after Close = %v, want nil: nothing is pending", err)
		}
	})
}
