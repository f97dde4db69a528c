package l2

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

func TestMain(m *testing.M) { redistest.Main(m) }

// waitTimeout bounds every wait for something Redis does asynchronously.
const waitTimeout = 5 * time.Second

// backend is a Redis server one test owns, and the kind of client the
// Store under test uses.
type backend struct {
	redistest.Backend
	cluster bool // the Store uses a Cluster client
}

// backends returns a fresh miniredis, the same behind a Cluster client
// (miniredis answers CLUSTER SLOTS with one node owning every slot, which
// exercises the Store's Cluster code paths), and, when redis-server is
// available (required with REQUIRE_REDIS=1), a fresh real server.
func backends(t *testing.T) []backend {
	t.Helper()
	var bs []backend
	for _, b := range redistest.Backends(t) {
		bs = append(bs, backend{Backend: b})
	}
	c := redistest.Mini(t)
	c.Name = "miniredis-cluster"
	return append(bs, backend{Backend: c, cluster: true})
}

// eachBackend runs f as a parallel subtest against every backend.
func eachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	t.Helper()
	for _, b := range backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			f(t, b)
		})
	}
}

// client returns a client of the kind the Store under test uses, closed
// when t ends.
func (b backend) client(t *testing.T) redis.UniversalClient {
	t.Helper()
	if !b.cluster {
		return redistest.Client(t, b.Addr)
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: []string{b.Addr}, MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// store returns a Store of namespace ns over a new client.
func (b backend) store(t *testing.T, ns string) *Store {
	t.Helper()
	s, err := New(b.client(t), &Options{Namespace: ns, OpTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// gatedStore is store with a publishGate on its client.
func (b backend) gatedStore(t *testing.T, ns string) (*Store, *publishGate) {
	t.Helper()
	rdb := b.client(t)
	g := newPublishGate()
	rdb.AddHook(g)
	s, err := New(rdb, &Options{Namespace: ns, OpTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s, g
}

// shortTTL is the TTL of a lease a test lets run out: 100ms, or 250ms on a
// real server, whose clock keeps running while a slow (-race) test takes
// its next step.
func (b backend) shortTTL() time.Duration {
	if b.Mini != nil {
		return 100 * time.Millisecond
	}
	return 250 * time.Millisecond
}

// expire makes key, set with a TTL of at most d, expire: miniredis's clock
// is moved forward; on a real server the test polls until the key is gone.
func (b backend) expire(t *testing.T, rdb *redis.Client, key string, d time.Duration) {
	t.Helper()
	if b.Mini != nil {
		b.Mini.FastForward(d)
	}
	ctx := context.Background()
	deadline := time.Now().Add(waitTimeout)
	for {
		n, err := rdb.Exists(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists %v after its TTL of at most %v", key, waitTimeout, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// subscriber is a separate connection subscribed to one channel.
type subscriber struct {
	t   *testing.T
	rdb *redis.Client
	ps  *redis.PubSub
	ch  string
}

// subscribe subscribes to ch and returns once Redis confirmed it.
func (b backend) subscribe(t *testing.T, ch string) *subscriber {
	t.Helper()
	rdb := redistest.Client(t, b.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ps := rdb.Subscribe(ctx, ch)
	t.Cleanup(func() { ps.Close() })
	msg, err := ps.Receive(ctx)
	if err != nil {
		t.Fatalf("subscribe %s: %v", ch, err)
	}
	if s, ok := msg.(*redis.Subscription); !ok || s.Kind != "subscribe" {
		t.Fatalf("subscribe %s: got %#v, want a confirmation", ch, msg)
	}
	return &subscriber{t: t, rdb: rdb, ps: ps, ch: ch}
}

// collect runs op and returns the payloads it published on the channel,
// in order, duplicates included: a receiver reads the channel while op runs,
// calling onMessage on each payload as it arrives, until a sentinel that
// collect publishes once op has returned (Redis delivers a channel's
// messages in the order they were published).
//
// With a gate on the Store's client, a command the Store sends after a
// PUBLISH waits until onMessage has run for that message, so a message
// published before the change it announces is caught on every run.
func (s *subscriber) collect(gate *publishGate, op func(), onMessage func(payload string)) []string {
	s.t.Helper()
	const sentinel = "\x00sentinel"
	got := make(chan []string, 1)
	go func() {
		var ps []string
		defer func() { got <- ps }()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		for {
			msg, err := s.ps.Receive(ctx)
			if err != nil {
				s.t.Errorf("receiving on %s: %v", s.ch, err)
				return
			}
			m, ok := msg.(*redis.Message)
			if !ok {
				continue
			}
			if m.Payload == sentinel {
				return
			}
			if onMessage != nil {
				onMessage(m.Payload)
			}
			ps = append(ps, m.Payload)
			if gate != nil {
				gate.seen(m.Payload)
			}
		}
	}()
	op()
	if err := s.rdb.Publish(context.Background(), s.ch, sentinel).Err(); err != nil {
		s.ps.Close() // end the receiver before failing
		<-got
		s.t.Fatal(err)
	}
	return <-got
}

// publishGate is a go-redis hook that holds every command (or pipeline) that
// follows a PUBLISH on the same client until the subscriber has seen the
// published payload.
type publishGate struct {
	mu      sync.Mutex
	pending map[string]int // payload -> PUBLISHed minus seen
	changed chan struct{}  // closed and replaced when pending changes
}

func newPublishGate() *publishGate {
	return &publishGate{pending: make(map[string]int), changed: make(chan struct{})}
}

func (g *publishGate) update(payload string, d int) {
	g.mu.Lock()
	g.pending[payload] += d
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
}

func (g *publishGate) seen(payload string) { g.update(payload, -1) }

// wait blocks until every payload PUBLISHed so far has been seen.
func (g *publishGate) wait(ctx context.Context) error {
	for {
		g.mu.Lock()
		drained := true
		for _, n := range g.pending {
			if n > 0 {
				drained = false
			}
		}
		changed := g.changed
		g.mu.Unlock()
		if drained {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("publishGate: a PUBLISHed message was never seen: %w", ctx.Err())
		}
	}
}

func (g *publishGate) DialHook(next redis.DialHook) redis.DialHook { return next }

func (g *publishGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "publish" {
			if err := g.wait(ctx); err != nil {
				return err
			}
			return next(ctx, cmd)
		}
		err := next(ctx, cmd)
		if err == nil {
			g.update(payloadOf(cmd.Args()[2]), +1)
		}
		return err
	}
}

func (g *publishGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := g.wait(ctx); err != nil {
			return err
		}
		return next(ctx, cmds)
	}
}

func payloadOf(a any) string {
	if b, ok := a.([]byte); ok {
		return string(b)
	}
	return fmt.Sprint(a)
}
