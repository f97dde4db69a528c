package pubsub

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/faultproxy"
	"github.com/tieredcache/tiered/internal/mono"
	"github.com/tieredcache/tiered/internal/redistest"
)

// waitProven waits until b.Proven holds.
func waitProven(t *testing.T, b *Bus) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !b.Proven(mono.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("the bus never proved itself fresh")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestProofFollowsMessages: once the bus's proof is newer than the moment
// a PUBLISH returned, the handler has already received that message: a
// PONG comes after every message published before its PING. 200 rounds on
// every backend.
func TestProofFollowsMessages(t *testing.T) {
	t.Parallel()
	redistest.Each(t, true, func(t *testing.T, be redistest.Backend) {
		rdb := redistest.Client(t, be.Addr)
		b := healthyBus(t, be.Addr, &Options{MaxStaleness: 20 * time.Millisecond})
		r := newRecorder(b)
		b.Register("ns", r)
		waitProven(t, b)
		r.pending()
		for i := range 200 {
			key := []string{time.Now().String()}
			publish(t, rdb, b, encode(t, Message{Kind: Invalidate, NodeID: "other", Namespace: "ns", Keys: key})...)
			published := mono.Now()
			deadline := time.Now().Add(waitTimeout)
			for b.proof.Load() <= published {
				b.Proven(mono.Now()) // asks for a PING
				if time.Now().After(deadline) {
					t.Fatalf("round %d: no proof newer than the PUBLISH", i)
				}
				time.Sleep(100 * time.Microsecond)
			}
			es := r.pending()
			if len(es) != 1 || es[0].op != "invalidate" || es[0].keys[0] != key[0] {
				t.Fatalf("round %d: proof newer than the PUBLISH, but the handler had %+v", i, es)
			}
		}
	})
}

// lastProven polls b.Proven until it fails and returns the last clock
// reading at which it held. The proof is a PING's send time, so once the
// bus can apply nothing more, Proven must fail for every reading more than
// MaxStaleness after that; measuring by the readings themselves keeps the
// test's own scheduling delays out of the figure.
func lastProven(b *Bus) int64 {
	var last int64
	for {
		now := mono.Now()
		if !b.Proven(now) {
			return last
		}
		last = now
		time.Sleep(time.Millisecond)
	}
}

// blockingHandler blocks the bus's receiving goroutine in Invalidate until
// release is closed: a stand-in for a goroutine starved of CPU.
type blockingHandler struct {
	recorder
	entered chan struct{}
	release chan struct{}
}

func (h *blockingHandler) Invalidate(keys []string) {
	close(h.entered)
	<-h.release
}

// TestProofExpires: Proven turns false within MaxStaleness when the bus
// stops applying messages, whether its goroutine is stuck (here, in a
// handler; in production, starved of CPU) or its connection is frozen,
// and true again once it catches up. Before the first confirmation and
// after Close there is no proof.
func TestProofExpires(t *testing.T) {
	t.Parallel()
	const maxStale = 50 * time.Millisecond
	srv := redistest.Start(t)
	rdb := redistest.Client(t, srv.Addr)

	t.Run("no proof before the subscription", func(t *testing.T) {
		b := startBus(t, redistest.RefusedAddr(t), &Options{MaxStaleness: maxStale})
		time.Sleep(2 * maxStale)
		if b.Proven(mono.Now()) || b.ProofAge() != -1 {
			t.Fatal("proven without a subscription")
		}
	})

	t.Run("receiver stuck", func(t *testing.T) {
		b := healthyBus(t, srv.Addr, &Options{MaxStaleness: maxStale})
		h := &blockingHandler{recorder: *newRecorder(b), entered: make(chan struct{}), release: make(chan struct{})}
		b.Register("ns", h)
		waitProven(t, b)
		released := false
		release := func() {
			if !released {
				released = true
				close(h.release)
			}
		}
		defer release() // Close would wait for a stuck receiver
		publish(t, rdb, b, encode(t, Message{Kind: Invalidate, NodeID: "other", Namespace: "ns", Keys: []string{"k"}})...)
		<-h.entered
		stuck := mono.Now()
		if d := time.Duration(lastProven(b) - stuck); d > maxStale {
			t.Fatalf("still proven %v after the receiver got stuck; MaxStaleness is %v", d, maxStale)
		}
		release()
		waitProven(t, b)
	})

	t.Run("connection frozen", func(t *testing.T) {
		p, err := faultproxy.New(srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		b := healthyBus(t, p.Addr(), &Options{MaxStaleness: maxStale, HealthInterval: time.Minute})
		waitProven(t, b)
		p.Freeze()
		// After Freeze: a PING sent before it may still be answered, and
		// its send time is before this reading.
		frozen := mono.Now()
		if d := time.Duration(lastProven(b) - frozen); d > maxStale {
			t.Fatalf("still proven %v after the connection froze; MaxStaleness is %v", d, maxStale)
		}
		if !b.Healthy() {
			t.Fatal("a frozen connection within its health interval made the bus unhealthy")
		}
		p.Thaw()
		waitProven(t, b)
		b.Close()
		if b.Proven(mono.Now()) {
			t.Fatal("proven after Close")
		}
	})
}

// TestUnconfirmedSubscription: a connection on which the SUBSCRIBE is
// never confirmed is replaced after a health interval, and again until one
// works, and the bus recovers as soon as a connection works. The proxy goes
// silent right after the first connection's handshake (go-redis's
// OnConnect), so that the SUBSCRIBE itself goes unanswered; a proxy silent
// from the start would only stall go-redis's HELLO, which go-redis already
// times out. Before, such a bus stayed unhealthy for good: a timeout while
// unhealthy neither pinged nor replaced the connection.
func TestUnconfirmedSubscription(t *testing.T) {
	t.Parallel()
	redistest.Each(t, true, func(t *testing.T, be redistest.Backend) {
		p, err := faultproxy.New(be.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		const interval = 100 * time.Millisecond
		// The client a tiered user is told to configure: go-redis honours
		// context deadlines on the socket only with ContextTimeoutEnabled.
		var once sync.Once
		rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
			ReadTimeout: 500 * time.Millisecond, ContextTimeoutEnabled: true,
			OnConnect: func(context.Context, *redis.Conn) error { once.Do(p.Silence); return nil }})
		t.Cleanup(func() { rdb.Close() })
		b, err := New(rdb, &Options{HealthInterval: interval})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		deadline := time.Now().Add(waitTimeout)
		for b.Stats().Replaced < 2 {
			if time.Now().After(deadline) {
				t.Fatal("the unconfirmed subscription was never replaced")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if b.Healthy() {
			t.Fatal("healthy without a confirmation")
		}
		p.Resume()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := b.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
		// Within one health interval and one reconnection backoff (at most
		// 1s), with a generous margin for a loaded machine.
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("recovered %v after the proxy resumed", d)
		}
	})
}
