package tiered

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/internal/stats"
)

// Fleet tests: several independent nodes (own client, own bus, own L1)
// sharing a real Redis started by the test: one redis-server, or a real
// Redis Cluster of 3 masters with a replica each (see eachTarget). The
// source of truth is a plain Redis key per product (see srcLoader), holding
// its version; the nodes' loaders read it with their own client.

// srcLoader loads a product's version from the source of truth: the key
// prefix+key, "src:"+key when prefix is "".
type srcLoader struct {
	rdb    redis.UniversalClient
	prefix string
	calls  atomic.Int64
}

// srcKey returns the Redis key holding key's version in the source of
// truth of prefix ("" means "src:").
func srcKey(prefix, key string) string {
	if prefix == "" {
		prefix = "src:"
	}
	return prefix + key
}

func (l *srcLoader) Load(ctx context.Context, key string) (Product, error) {
	l.calls.Add(1)
	v, err := l.rdb.Get(ctx, srcKey(l.prefix, key)).Int()
	if errors.Is(err, redis.Nil) {
		return Product{}, ErrNotFound
	}
	if err != nil {
		return Product{}, err
	}
	return Product{Name: key, Version: v}, nil
}

// dialGate lets a test refuse a node's new connections. Its dial is the
// Dialer of a redis.Options or a redis.ClusterOptions: a Cluster client
// dials every node with it.
type dialGate struct{ closed atomic.Bool }

func (g *dialGate) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if g.closed.Load() {
		return nil, errors.New("dialGate: refused by the test")
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

type fleetNode struct {
	c    *Cache[Product]
	rdb  redis.UniversalClient
	src  *srcLoader
	gate *dialGate
}

// fleetTarget is the Redis a fleet's nodes share: a redis-server, or a real
// Cluster and the pub/sub mode of the nodes' buses on it. Fleets that share
// a server or a cluster must differ in ns.
type fleetTarget struct {
	addr    string             // the redis-server; "" for a cluster
	cluster *redistest.Cluster // nil for a redis-server
	// classic gives each node on the cluster a bus of ModeClassic (PUBLISH
	// and one SUBSCRIBE) instead of the one New makes, which is sharded on a
	// Cluster client (BusModeAuto).
	classic bool
	// ns is the nodes' namespace and names their source keys; "" means
	// namespace "fleet" and source keys "src:<key>".
	ns string
}

// namespace returns the namespace of the target's nodes.
func (tg fleetTarget) namespace() string {
	if tg.ns == "" {
		return "fleet"
	}
	return tg.ns
}

// srcPrefix returns the prefix of the target's source keys.
func (tg fleetTarget) srcPrefix() string {
	if tg.ns == "" {
		return "src:"
	}
	return "src:" + tg.ns + ":"
}

// sharded reports whether the target's nodes use sharded pub/sub.
func (tg fleetTarget) sharded() bool { return tg.cluster != nil && !tg.classic }

// client returns a client of the target whose connections are dialled by
// dial (nil for a plain dial), closed when t ends.
func (tg fleetTarget) client(t *testing.T, dial func(ctx context.Context, network, addr string) (net.Conn, error)) redis.UniversalClient {
	t.Helper()
	if tg.cluster != nil {
		return tg.cluster.Client(t, &redis.ClusterOptions{Dialer: dial, PoolSize: 32, MaxRetries: -1})
	}
	rdb := redis.NewClient(&redis.Options{Addr: tg.addr, Dialer: dial, PoolSize: 32, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// admin returns a client of the target for the test's own commands,
// closed when t ends.
func (tg fleetTarget) admin(t *testing.T) redis.UniversalClient {
	t.Helper()
	if tg.cluster != nil {
		return tg.cluster.Client(t, nil)
	}
	return redistest.Client(t, tg.addr)
}

// setSource sets key's version in the target's source of truth.
func (tg fleetTarget) setSource(t *testing.T, rdb redis.UniversalClient, key string, version int) {
	t.Helper()
	if err := rdb.Set(context.Background(), srcKey(tg.srcPrefix(), key), version, 0).Err(); err != nil {
		t.Fatal(err)
	}
}

// eachTarget runs f in subtest "redis-server", on a redis-server of its
// own, and in subtests "cluster/sharded" and "cluster/classic", one per
// pub/sub mode of the nodes' buses, on one real Redis Cluster (3 masters
// with a replica each; forming it takes seconds, so they share it) in
// namespaces of their own.
func eachTarget(t *testing.T, f func(t *testing.T, tg fleetTarget)) {
	t.Helper()
	t.Run("redis-server", func(t *testing.T) {
		f(t, fleetTarget{addr: redistest.Start(t).Addr})
	})
	t.Run("cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t, nil)
		t.Run("sharded", func(t *testing.T) {
			f(t, fleetTarget{cluster: cl, ns: "fleet-sharded"})
		})
		t.Run("classic", func(t *testing.T) {
			f(t, fleetTarget{cluster: cl, classic: true, ns: "fleet-classic"})
		})
	})
}

// onServers runs f on the server of rdb, or, for a Cluster client, on every
// master (masters) or every node at once, and returns the first error.
func onServers(ctx context.Context, rdb redis.UniversalClient, masters bool, f func(context.Context, *redis.Client) error) error {
	switch c := rdb.(type) {
	case *redis.Client:
		return f(ctx, c)
	case *redis.ClusterClient:
		if masters {
			return c.ForEachMaster(ctx, f)
		}
		return c.ForEachShard(ctx, f)
	}
	return fmt.Errorf("onServers: a %T", rdb)
}

// newFleet returns n nodes on the redis-server at addr.
func newFleet(t *testing.T, addr string, n int, opts Options) []*fleetNode {
	t.Helper()
	return newFleetOn(t, fleetTarget{addr: addr}, n, opts)
}

// newFleetOn returns n nodes on tg, each with its own client (through its
// own dialGate), bus and L1, once every one is ready. opts.Namespace
// defaults to tg's, opts.TTL to a minute.
func newFleetOn(t *testing.T, tg fleetTarget, n int, opts Options) []*fleetNode {
	t.Helper()
	if opts.Namespace == "" {
		opts.Namespace = tg.namespace()
	}
	if opts.TTL == 0 {
		opts.TTL = time.Minute
	}
	nodes := make([]*fleetNode, n)
	for i := range nodes {
		gate := &dialGate{}
		rdb := tg.client(t, gate.dial) // closed after the cache and bus: cleanups run last-in first-out
		o := opts
		if tg.classic && o.Bus == nil {
			bus, err := NewBus(rdb, &BusOptions{Mode: BusModeClassic, MaxStaleness: o.MaxStaleness})
			if err != nil {
				t.Fatal(err)
			}
			// A cache does not close a bus it was given (Options.Bus): close
			// it after the cache.
			t.Cleanup(func() { bus.Close() })
			o.Bus = bus
		}
		c, err := New[Product](rdb, &o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if got := c.Bus().Sharded(); got != tg.sharded() {
			t.Fatalf("a node's bus is sharded: %v, want %v", got, tg.sharded())
		}
		// The loader reads the source of truth with a client of its own,
		// outside the gate: the database is not the node's Redis, and a
		// refused dial (a pool whose connection to a master timed out and
		// was dropped) must not fail a load while a test shuts the gate.
		src := &srcLoader{rdb: tg.client(t, nil), prefix: tg.srcPrefix()}
		nodes[i] = &fleetNode{c: c, rdb: rdb, src: src, gate: gate}
	}
	// A sharded bus sends 16384 SSUBSCRIBEs: seconds on a busy machine
	// under the race detector.
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for _, nd := range nodes {
		if err := nd.c.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// setSource sets key's version in the source of truth of the nodes of
// newFleet: "src:"+key.
func setSource(t *testing.T, rdb redis.UniversalClient, key string, version int) {
	t.Helper()
	fleetTarget{}.setSource(t, rdb, key, version)
}

// TestFleetStampede: 3 nodes × 100 goroutines released together on a cold
// key with a 50 ms loader: the loader runs exactly once in the whole fleet,
// for each of 20 keys. On a redis-server and on a real Cluster, with the
// waiters woken by sharded or classic pub/sub.
func TestFleetStampede(t *testing.T) {
	eachTarget(t, testFleetStampede)
}

func testFleetStampede(t *testing.T, tg fleetTarget) {
	nodes := newFleetOn(t, tg, 3, Options{})
	ctx := context.Background()
	var calls sync.Map // key → *atomic.Int64
	loader := LoaderFunc[Product](func(ctx context.Context, key string) (Product, error) {
		n, _ := calls.LoadOrStore(key, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		time.Sleep(50 * time.Millisecond)
		return Product{Name: key, Version: 1}, nil
	})
	var followers []time.Duration
	for k := range 20 {
		key := fmt.Sprint("cold-", k)
		start := make(chan struct{})
		var wg sync.WaitGroup
		lat := make(chan time.Duration, 300)
		errs := make(chan error, 300)
		for _, nd := range nodes {
			for range 100 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					t0 := time.Now()
					p, err := nd.c.GetOrLoad(ctx, key, loader)
					if err == nil && p.Name != key {
						err = fmt.Errorf("got %+v", p)
					}
					errs <- err
					lat <- time.Since(t0)
				}()
			}
		}
		close(start)
		wg.Wait()
		close(errs)
		close(lat)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for d := range lat {
			followers = append(followers, d)
		}
		n, _ := calls.Load(key)
		if got := n.(*atomic.Int64).Load(); got != 1 {
			t.Fatalf("key %s: loader ran %d times in the fleet, want 1", key, got)
		}
	}
	var waits uint64
	for _, nd := range nodes {
		waits += nd.c.Stats().LeaseWaits
	}
	if waits == 0 {
		t.Fatal("no node ever waited for a lease: the test did not exercise the lease")
	}
	t.Logf("callers p50 %v p99 %v (loader 50ms); lease waits %d", stats.Percentile(followers, .5), stats.Percentile(followers, .99), waits)
	// A generous sanity bound, not the performance target (see make bench-fleet).
	if p99 := stats.Percentile(followers, .99); p99 > time.Second {
		t.Fatalf("caller p99 %v: waiters are not woken", p99)
	}
}

// TestFleetInvalidation: every node holds a key in L1; node A updates the
// source and calls Delete; nodes B and C return the new value within a
// bound. Latencies over 200 trials are logged. On a redis-server and on a
// real Cluster, with sharded and with classic pub/sub.
func TestFleetInvalidation(t *testing.T) {
	eachTarget(t, testFleetInvalidation)
}

func testFleetInvalidation(t *testing.T, tg fleetTarget) {
	nodes := newFleetOn(t, tg, 3, Options{})
	ctx := context.Background()
	a := nodes[0]
	var lat []time.Duration
	for trial := range 200 {
		key := fmt.Sprint("k", trial%10)
		tg.setSource(t, a.rdb, key, trial)
		if err := a.c.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		// Every node reads the current version into L1.
		for _, nd := range nodes {
			for {
				p, err := nd.c.GetOrLoad(ctx, key, nd.src)
				if err != nil {
					t.Fatal(err)
				}
				if p.Version == trial {
					break
				}
			}
			// Without the key in every L1, a broken invalidation could pass
			// unnoticed: make sure the next read is an L1 hit. ristretto
			// applies fills asynchronously and may drop one; read again.
			waitFor(t, 2*time.Second, "the current version in L1", func() bool {
				before := nd.c.Stats().L1Hits
				p, _ := nd.c.GetOrLoad(ctx, key, nd.src)
				return p.Version == trial && nd.c.Stats().L1Hits == before+1
			})
		}
		// A writes.
		tg.setSource(t, a.rdb, key, trial+1000)
		if err := a.c.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		acked := time.Now()
		for _, nd := range nodes[1:] {
			for {
				p, err := nd.c.GetOrLoad(ctx, key, nd.src)
				if err != nil {
					t.Fatal(err)
				}
				if p.Version == trial+1000 {
					lat = append(lat, time.Since(acked))
					break
				}
				if time.Since(acked) > 2*time.Second {
					t.Fatalf("trial %d: node still returns version %d 2s after the Delete", trial, p.Version)
				}
			}
		}
	}
	t.Logf("invalidation visible on other nodes: p50 %v p99 %v max %v over %d reads",
		stats.Percentile(lat, .5), stats.Percentile(lat, .99), stats.Percentile(lat, 1), len(lat))
	for _, nd := range nodes[1:] {
		if nd.c.Stats().Invalidations == 0 {
			t.Fatal("a node received no invalidation")
		}
	}
}

// TestFleetRace: a slow load in flight on node B (holding the lease) while
// node A deletes the key: afterwards neither B's L1 nor Redis holds the old
// value. On a redis-server and on a real Cluster, with sharded and with
// classic pub/sub.
func TestFleetRace(t *testing.T) {
	eachTarget(t, testFleetRace)
}

func testFleetRace(t *testing.T, tg fleetTarget) {
	nodes := newFleetOn(t, tg, 2, Options{})
	a, b := nodes[0], nodes[1]
	ctx := context.Background()
	ns := tg.namespace()
	heard := make(chan struct{}, 1)
	unregister := b.c.bus.Register(ns, notifyHandler{heard})
	defer unregister()

	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan Product, 1)
	go func() {
		p, _ := b.c.GetOrLoad(ctx, "k", LoaderFunc[Product](func(context.Context, string) (Product, error) {
			close(started)
			<-release
			return Product{Version: 1}, nil // read from the source before A's write
		}))
		done <- p
	}()
	<-started
	released := false
	defer func() { // on a failure, end the load: B's Close waits for it
		if !released {
			close(release)
			<-done
		}
	}()
	if n, _ := a.rdb.Exists(ctx, ns+":{k}:lease").Result(); n != 1 {
		t.Fatal("B does not hold the lease")
	}
	if err := a.c.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	select { // B's bus delivered the invalidation
	case <-heard:
	case <-time.After(5 * time.Second):
		t.Fatal("B's bus did not deliver A's invalidation within 5s")
	}
	close(release)
	released = true
	<-done
	if p, ok := inL1(b.c)("k"); ok {
		t.Fatalf("B's L1 holds %+v, loaded before A's Delete", p)
	}
	if n, _ := a.rdb.Exists(ctx, ns+":{k}").Result(); n != 0 {
		t.Fatal("Redis holds the value loaded before A's Delete")
	}
	if got := b.c.Stats().StaleDiscards; got != 1 {
		t.Fatalf("B's StaleDiscards = %d, want 1", got)
	}
}

// notifyHandler signals a channel whenever its namespace is invalidated.
type notifyHandler struct{ ch chan struct{} }

func (h notifyHandler) Invalidate([]string) {
	select {
	case h.ch <- struct{}{}:
	default:
	}
}
func (notifyHandler) Wake([]string) {}
func (notifyHandler) Reset()        {}

// waitFor polls cond every millisecond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFleetGap: the subscriber connections are killed and invalidations are
// published during the gap. During the gap no node serves from L1; once
// back, no node serves the old value. On a redis-server and on a real
// Cluster, where the subscriptions are killed on every node, with sharded
// pub/sub (a connection per master, any of whose loss is a gap of the bus)
// and with classic.
func TestFleetGap(t *testing.T) {
	eachTarget(t, testFleetGap)
}

func testFleetGap(t *testing.T, tg fleetTarget) {
	nodes := newFleetOn(t, tg, 3, Options{})
	a, b, c := nodes[0], nodes[1], nodes[2]
	ctx := context.Background()
	admin := tg.admin(t)
	keys := []string{"g1", "g2", "g3"}
	for _, k := range keys {
		tg.setSource(t, admin, k, 1)
		for _, nd := range nodes {
			if _, err := nd.c.GetOrLoad(ctx, k, nd.src); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, nd := range nodes {
		for _, k := range keys {
			if _, ok := inL1(nd.c)(k); !ok {
				t.Fatalf("%s not in L1 before the gap", k)
			}
		}
	}

	// B cannot reconnect during the gap; C can, as soon as it notices.
	resets := b.c.Stats().Resets
	b.gate.closed.Store(true)
	if err := onServers(ctx, admin, false, func(ctx context.Context, s *redis.Client) error {
		return s.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err()
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B's bus to notice the gap", func() bool { return !b.c.Bus().Healthy() })

	// A writes during the gap; B cannot hear it.
	for _, k := range keys {
		tg.setSource(t, admin, k, 2)
	}
	if err := a.c.Delete(ctx, keys...); err != nil {
		t.Fatal(err)
	}
	l1Before := b.c.Stats().L1Hits
	// B reads all keys but the last: those reads fill B's L1 with version
	// 2, while the last key stays at version 1 in B's L1 and only the reset
	// on resubscription can drop it.
	for range 20 {
		for _, k := range keys[:len(keys)-1] {
			p, err := b.c.GetOrLoad(ctx, k, b.src)
			if err != nil {
				t.Fatal(err)
			}
			if p.Version != 2 {
				t.Fatalf("B served version %d of %s during the gap", p.Version, k)
			}
		}
	}
	if got := b.c.Stats().L1Hits; got != l1Before {
		t.Fatalf("B served %d reads from L1 while its bus was down", got-l1Before)
	}
	if b.c.Bus().Healthy() {
		t.Fatal("B's bus recovered while its dials were refused")
	}

	// B reconnects: its L1 is reset before it serves from it again.
	b.gate.closed.Store(false)
	waitFor(t, 10*time.Second, "B's bus to recover", b.c.Bus().Healthy)
	waitFor(t, 10*time.Second, "C's bus to recover", c.c.Bus().Healthy)
	for _, nd := range nodes {
		for _, k := range keys {
			p, err := nd.c.GetOrLoad(ctx, k, nd.src)
			if err != nil || p.Version != 2 {
				t.Fatalf("after the gap a node served %+v, %v for %s", p, err, k)
			}
		}
	}
	if b.c.Bus().Stats().Gaps == 0 || b.c.Stats().Resets <= resets {
		t.Fatalf("B: bus stats %+v, cache stats %+v: gap not counted", b.c.Bus().Stats(), b.c.Stats())
	}
}

// TestFleetLeaseHolderStuck: a lease holder whose load never finishes;
// another node loads after the lease TTL and its callers get the value. The
// stuck holder's late result is discarded.
func TestFleetLeaseHolderStuck(t *testing.T) {
	s := redistest.Start(t)
	const leaseTTL = 300 * time.Millisecond
	nodes := newFleet(t, s.Addr, 2, Options{LeaseTTL: leaseTTL, LoadTimeout: 5 * time.Second})
	a, b := nodes[0], nodes[1]
	ctx := context.Background()
	setSource(t, a.rdb, "k", 7)

	started, release := make(chan struct{}), make(chan struct{})
	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		a.c.GetOrLoad(ctx, "k", LoaderFunc[Product](func(context.Context, string) (Product, error) {
			close(started)
			<-release
			return Product{Version: -1}, nil
		}))
	}()
	<-started
	t0 := time.Now()
	p, err := b.c.GetOrLoad(ctx, "k", b.src)
	took := time.Since(t0)
	if err != nil || p.Version != 7 {
		t.Fatalf("B got %+v, %v", p, err)
	}
	if b.src.calls.Load() != 1 {
		t.Fatalf("B's loader ran %d times, want 1", b.src.calls.Load())
	}
	if took < leaseTTL/2 {
		t.Fatalf("B loaded after %v, before the lease could expire", took)
	}
	close(release)
	<-aDone
	if got := a.c.Stats().StaleDiscards; got != 1 {
		t.Fatalf("A's late fill: StaleDiscards = %d, want 1", got)
	}
	if p, err := a.c.Get(ctx, "k"); err != nil || p.Version != 7 {
		t.Fatalf("A reads %+v, %v; want B's value", p, err)
	}
}

// TestFleetReadYourWrite: right after its own Delete or Set returns, a node
// never reads the old value, even with other goroutines filling its L1
// concurrently. On a redis-server and on a real Cluster, with sharded and
// with classic pub/sub.
func TestFleetReadYourWrite(t *testing.T) {
	eachTarget(t, testFleetReadYourWrite)
}

func testFleetReadYourWrite(t *testing.T, tg fleetTarget) {
	nodes := newFleetOn(t, tg, 2, Options{})
	a := nodes[0]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, nd := range nodes {
		for range 4 { // background readers keep filling both L1s
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					nd.c.GetOrLoad(ctx, "ryw", nd.src)
					time.Sleep(50 * time.Microsecond) // leave the CPUs to the writer
				}
			}()
		}
	}
	stale := 0
	for i := range 300 {
		tg.setSource(t, a.rdb, "ryw", i)
		if i%2 == 0 {
			if err := a.c.Delete(context.Background(), "ryw"); err != nil {
				t.Fatal(err)
			}
		} else if err := a.c.Set(context.Background(), "ryw", Product{Name: "ryw", Version: i}); err != nil {
			t.Fatal(err)
		}
		p, err := a.c.GetOrLoad(context.Background(), "ryw", a.src)
		if err != nil {
			t.Fatal(err)
		}
		if p.Version != i {
			stale++
		}
	}
	cancel()
	wg.Wait()
	if stale != 0 {
		t.Fatalf("%d of 300 reads right after the node's own write returned an old version", stale)
	}
}

// TestFleetSilentSubscriber: a subscription that stops answering without an
// error (here the server is paused) is detected by the health PING within
// two health intervals; the node stops serving from L1 and recovers after.
func TestFleetSilentSubscriber(t *testing.T) {
	s := redistest.Start(t)
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer rdb.Close()
	bus, err := NewBus(rdb, &BusOptions{HealthInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	c, err := New[Product](rdb, &Options{Namespace: "silent", TTL: time.Minute, Bus: bus})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := bus.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	admin := redistest.Client(t, s.Addr)
	if err := c.Set(ctx, "1", Product{ID: 1}); err != nil {
		t.Fatal(err)
	}
	if _, ok := inL1(c)("1"); !ok {
		t.Fatal("key not in L1 before the pause")
	}
	resets := c.Stats().Resets
	paused := time.Now()
	if err := admin.Do(ctx, "CLIENT", "PAUSE", "1500", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "the bus to notice the silence", func() bool { return !bus.Healthy() })
	t.Logf("silent subscription detected after %v (health interval 100ms)", time.Since(paused))
	// While the bus is down the key is not served from L1 (the read goes to
	// the paused Redis, and gives up with its context).
	hits := c.Stats().L1Hits
	gctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, _ = c.Get(gctx, "1")
	cancel()
	if got := c.Stats().L1Hits; got != hits {
		t.Fatalf("served %d reads from L1 while the bus was down", got-hits)
	}
	waitFor(t, 10*time.Second, "the bus to recover", bus.Healthy)
	if c.Stats().Resets <= resets {
		t.Fatalf("L1 not reset after the silent gap: %+v", c.Stats())
	}
}

// TestLeaseWaitersAreWoken: flights waiting for a lease are woken when it is
// filled, by the holder's wake message from another node, or directly when
// the holder is a flight of the same process (the bus does not deliver a
// node's own messages). Polling is slowed to 10s, so only a wake-up can make
// the waiter finish in time.
func TestLeaseWaitersAreWoken(t *testing.T) {
	s := redistest.Start(t)
	nodes := newFleet(t, s.Addr, 2, Options{LeaseTTL: 5 * time.Second})
	for _, nd := range nodes {
		nd.c.pollMin, nd.c.pollMax = 10*time.Second, 10*time.Second
	}
	for _, tc := range []struct {
		name   string
		waiter *fleetNode
	}{
		{"other node", nodes[1]},
		{"same node", nodes[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			key := strings.ReplaceAll(tc.name, " ", "-")
			holder := nodes[0]
			setSource(t, holder.rdb, key, 1)
			started, release := make(chan struct{}), make(chan struct{})
			go holder.c.GetOrLoad(ctx, key, LoaderFunc[Product](func(ctx context.Context, k string) (Product, error) {
				close(started)
				<-release
				return holder.src.Load(ctx, k)
			}))
			<-started
			// A second flight of the key: on the same node, a flight started
			// after a write (which forgets the first); here, by forgetting it.
			if n, _ := holder.rdb.Exists(ctx, "fleet:{"+key+"}:lease").Result(); n != 1 {
				t.Fatal("the holder does not hold the lease")
			}
			tc.waiter.c.flights.Load().loads.forget(key)
			done := make(chan error, 1)
			waiterLoader := &srcLoader{rdb: tc.waiter.rdb}
			go func() {
				p, err := tc.waiter.c.GetOrLoad(ctx, key, waiterLoader)
				if err == nil && p.Version != 1 {
					err = fmt.Errorf("got %+v", p)
				}
				done <- err
			}()
			waitFor(t, 2*time.Second, "the waiter to wait for the lease", func() bool {
				return tc.waiter.c.Stats().LeaseWaits > 0
			})
			close(release)
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("the waiter was not woken when the lease was filled")
			}
			if waiterLoader.calls.Load() != 0 {
				t.Fatal("the waiter loaded instead of reading the holder's value")
			}
		})
	}
}

// TestCloseEndsLeaseWaits: Close of a node whose flight waits for another
// node's lease ends the wait (the caller gets ErrClosed) and returns only
// after the flight is over, so no loader runs after Close.
func TestCloseEndsLeaseWaits(t *testing.T) {
	s := redistest.Start(t)
	nodes := newFleet(t, s.Addr, 2, Options{LeaseTTL: 5 * time.Second})
	a, b := nodes[0], nodes[1]
	ctx := context.Background()
	started, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	go a.c.GetOrLoad(ctx, "k", LoaderFunc[Product](func(context.Context, string) (Product, error) {
		close(started)
		<-release
		return Product{}, nil
	}))
	<-started
	loaded := &srcLoader{rdb: b.rdb}
	done := make(chan error, 1)
	go func() {
		_, err := b.c.GetOrLoad(ctx, "k", loaded)
		done <- err
	}()
	waitFor(t, 5*time.Second, "B to wait for the lease", func() bool { return b.c.Stats().LeaseWaits > 0 })
	t0 := time.Now()
	b.c.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("waiting caller got %v, want ErrClosed", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if loaded.calls.Load() != 0 {
		t.Fatal("B's loader ran during or after Close")
	}
}
