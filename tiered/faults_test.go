package tiered

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/faultproxy"
	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/l2"
)

// Fault tests: independent nodes on a real redis-server started by the
// test, and real faults: CLIENT PAUSE, added latency and a silent or cut
// connection through a loopback proxy (internal/faultproxy), SIGKILL and
// a restart from an RDB file. Some run on a real Redis Cluster too (see
// faultTargets). The source of truth is memDB, outside Redis, so that the
// loaders keep working while Redis does not.

// errorBound is how soon after a write that returned an error (its
// invalidation queued in the outbox) reads must see it in these tests: the
// outbox delivers as soon as Redis answers, and every fault here lasts at
// most a second.
const errorBound = time.Second

// memDB is a source of truth outside Redis: a version per key.
type memDB struct {
	mu    sync.Mutex
	v     map[string]int
	calls atomic.Int64
	// gate, if set, runs at the start of every Load, after the version
	// was read: a test blocks a load in it.
	gate func(key string)
}

func newMemDB() *memDB { return &memDB{v: make(map[string]int)} }

func (d *memDB) Load(ctx context.Context, key string) (Product, error) {
	d.calls.Add(1)
	d.mu.Lock()
	v, gate := d.v[key], d.gate
	d.mu.Unlock()
	if gate != nil {
		gate(key)
	}
	return Product{Name: key, Version: v}, nil
}

func (d *memDB) bump(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.v[key]++
	return d.v[key]
}

func (d *memDB) version(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.v[key]
}

// staleLog records writes and judges reads against them.
type staleLog struct {
	maxStale time.Duration
	mu       sync.Mutex
	writes   map[string][]writeRec // by key, in version order
	reads    atomic.Int64
	stale    []string // descriptions of reads past a bound
}

type writeRec struct {
	version  int
	returned time.Time
	err      error
}

func newStaleLog(maxStale time.Duration) *staleLog {
	return &staleLog{maxStale: maxStale, writes: make(map[string][]writeRec)}
}

func (l *staleLog) wrote(key string, version int, returned time.Time, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes[key] = append(l.writes[key], writeRec{version, returned, err})
}

// read judges a read of key that started at start and returned got: it
// must not be older than a write that returned nil more than maxStale
// before, or one that returned an error more than errorBound before.
func (l *staleLog) read(node, key string, start time.Time, got int) {
	l.reads.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.writes[key] {
		if w.version <= got {
			continue
		}
		late := start.Sub(w.returned)
		if (w.err == nil && late > l.maxStale) || (w.err != nil && late > errorBound) {
			l.stale = append(l.stale, fmt.Sprintf("%s read %s at version %d, %v after the write of version %d returned (err %v)",
				node, key, got, late.Round(time.Millisecond), w.version, w.err))
			return
		}
	}
}

func (l *staleLog) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.stale) > 0 {
		t.Errorf("%d of %d reads were stale past their bound; the first ones:", len(l.stale), l.reads.Load())
		for _, s := range l.stale[:min(len(l.stale), 10)] {
			t.Error("  ", s)
		}
	}
}

// faultNode is one node: its cache over a data client, with a bus over a
// client of its own, so that a test can put either behind a proxy.
type faultNode struct {
	name string
	c    *Cache[Product]
	db   *memDB
}

// faultClient is a client as docs/operations.md tells users to configure
// one: context deadlines honoured on the socket, no retries.
func faultClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	return faultTarget{addr: addr}.client(t, nil).(*redis.Client)
}

// faultBusOptions are the bus options of newFaultNode.
var faultBusOptions = BusOptions{HealthInterval: 200 * time.Millisecond}

func newFaultNode(t *testing.T, name, dataAddr, busAddr string, db *memDB, opts Options) *faultNode {
	t.Helper()
	bo := faultBusOptions
	return newFaultNodeBus(t, name, dataAddr, busAddr, db, opts, &bo)
}

func newFaultNodeBus(t *testing.T, name, dataAddr, busAddr string, db *memDB, opts Options, busOpts *BusOptions) *faultNode {
	t.Helper()
	return newFaultNodeOn(t, name, faultClient(t, dataAddr), faultClient(t, busAddr), db, opts, busOpts)
}

// newFaultNodeOn returns a node whose cache uses data and whose bus uses
// bus, in namespace "faults" unless opts names one, once it is ready.
func newFaultNodeOn(t *testing.T, name string, data, busClient redis.UniversalClient, db *memDB, opts Options, busOpts *BusOptions) *faultNode {
	t.Helper()
	bus, err := NewBus(busClient, busOpts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	opts.Bus = bus
	if opts.Namespace == "" {
		opts.Namespace = "faults"
	}
	if opts.TTL == 0 {
		opts.TTL = time.Minute
	}
	c, err := New[Product](data, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("%s never became ready: %v", name, err)
	}
	return &faultNode{name: name, c: c, db: db}
}

// proxied starts a redis-server and a faultproxy in front of it; both stop
// when t ends.
func proxied(t *testing.T) (*redistest.Server, *faultproxy.Proxy) {
	t.Helper()
	srv := redistest.Start(t)
	p, err := faultproxy.New(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return srv, p
}

// faultPair returns two nodes, A and B, on addr with default options, and
// their database.
func faultPair(t *testing.T, addr string) (*memDB, *faultNode, *faultNode) {
	t.Helper()
	return faultTarget{addr: addr}.pair(t)
}

// faultTarget is the Redis of a fault test: a redis-server, or a real
// Cluster that the subtests of a test share, each in a namespace of its own.
type faultTarget struct {
	addr    string             // the redis-server; "" for a cluster
	cluster *redistest.Cluster // nil for a redis-server
	ns      string             // the nodes' namespace; "" means "faults"
}

// namespace returns the namespace of the target's nodes.
func (ft faultTarget) namespace() string {
	if ft.ns == "" {
		return "faults"
	}
	return ft.ns
}

// addrs returns the address of every server of the target.
func (ft faultTarget) addrs() []string {
	if ft.cluster != nil {
		return ft.cluster.Addrs
	}
	return []string{ft.addr}
}

// client returns a client of the target configured as faultClient's, whose
// connections are dialled by dial (nil for a plain dial), closed when t ends.
// A Cluster client takes the same settings; it dials every node with dial.
func (ft faultTarget) client(t *testing.T, dial func(ctx context.Context, network, addr string) (net.Conn, error)) redis.UniversalClient {
	t.Helper()
	if ft.cluster != nil {
		return ft.cluster.Client(t, &redis.ClusterOptions{Dialer: dial, MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
			ReadTimeout: time.Second, ContextTimeoutEnabled: true, PoolSize: 16})
	}
	rdb := redis.NewClient(&redis.Options{Addr: ft.addr, Dialer: dial, MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: time.Second, ContextTimeoutEnabled: true, PoolSize: 16})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// masters returns how many masters the target has: 1 for a redis-server.
func (ft faultTarget) masters(t *testing.T) int {
	t.Helper()
	if ft.cluster == nil {
		return 1
	}
	m, err := ft.cluster.Masters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

// admin returns a client of the target for the test's own commands.
func (ft faultTarget) admin(t *testing.T) redis.UniversalClient {
	t.Helper()
	if ft.cluster != nil {
		return ft.cluster.Client(t, nil)
	}
	return redistest.Client(t, ft.addr)
}

// node returns a node of the target in its namespace whose cache's
// connections are dialled by dial (nil for a plain dial) and whose bus
// connects directly, with newFaultNode's bus options.
func (ft faultTarget) node(t *testing.T, name string, dial func(ctx context.Context, network, addr string) (net.Conn, error), db *memDB, opts Options) *faultNode {
	t.Helper()
	opts.Namespace = ft.namespace()
	bo := faultBusOptions
	return newFaultNodeOn(t, name, ft.client(t, dial), ft.client(t, nil), db, opts, &bo)
}

// pair returns two nodes of the target, A and B, with default options, and
// their database.
func (ft faultTarget) pair(t *testing.T) (*memDB, *faultNode, *faultNode) {
	t.Helper()
	db := newMemDB()
	return db, ft.node(t, "A", nil, db, Options{}), ft.node(t, "B", nil, db, Options{})
}

// faultTargets runs f in subtests "redis-server/<sub>", each on a
// redis-server of its own, and "cluster/<sub>", all on one real Redis
// Cluster (3 masters with a replica each; forming it takes seconds), each
// in a namespace of its own; with no subs, in "redis-server" and "cluster".
// The nodes' buses on the cluster use sharded pub/sub (BusModeAuto).
func faultTargets(t *testing.T, subs []string, f func(t *testing.T, ft faultTarget, sub string)) {
	t.Helper()
	t.Run("redis-server", func(t *testing.T) {
		if len(subs) == 0 {
			f(t, faultTarget{addr: redistest.Start(t).Addr}, "")
		}
		for _, sub := range subs {
			t.Run(sub, func(t *testing.T) { f(t, faultTarget{addr: redistest.Start(t).Addr}, sub) })
		}
	})
	t.Run("cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t, nil)
		if len(subs) == 0 {
			f(t, faultTarget{cluster: cl}, "")
		}
		for i, sub := range subs {
			t.Run(sub, func(t *testing.T) { f(t, faultTarget{cluster: cl, ns: fmt.Sprint("faults", i)}, sub) })
		}
	})
}

// proxySet is a faultproxy in front of every server of a target, by the
// server's address. Its dial, as a client's Dialer, sends the client's
// connections through them: a Cluster client learns its nodes' addresses
// from CLUSTER SLOTS, so a proxy cannot stand in for them as a seed.
type proxySet map[string]*faultproxy.Proxy

func newProxySet(t *testing.T, ft faultTarget) proxySet {
	t.Helper()
	ps := make(proxySet)
	for _, addr := range ft.addrs() {
		p, err := faultproxy.New(addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		ps[addr] = p
	}
	return ps
}

func (ps proxySet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	p := ps[addr]
	if p == nil {
		return nil, fmt.Errorf("proxySet: no proxy in front of %s", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, p.Addr())
}

// Silence silences every proxy: see faultproxy.Proxy.Silence.
func (ps proxySet) Silence() {
	for _, p := range ps {
		p.Silence()
	}
}

// Resume resumes every proxy: see faultproxy.Proxy.Resume.
func (ps proxySet) Resume() {
	for _, p := range ps {
		p.Resume()
	}
}

// Set sets the mode of every proxy: see faultproxy.Proxy.Set.
func (ps proxySet) Set(m faultproxy.Mode, s faultproxy.Scope) {
	for _, p := range ps {
		p.Set(m, s)
	}
}

// CutAll cuts the connections of every proxy: see faultproxy.Proxy.CutAll.
func (ps proxySet) CutAll() {
	for _, p := range ps {
		p.CutAll()
	}
}

// Freeze freezes every proxy: see faultproxy.Proxy.Freeze.
func (ps proxySet) Freeze() {
	for _, p := range ps {
		p.Freeze()
	}
}

// Thaw thaws every proxy: see faultproxy.Proxy.Thaw.
func (ps proxySet) Thaw() {
	for _, p := range ps {
		p.Thaw()
	}
}

// read reads key through n and judges it.
func (n *faultNode) read(t *testing.T, log *staleLog, key string) {
	start := time.Now()
	p, err := n.c.GetOrLoad(context.Background(), key, n.db)
	if err != nil {
		t.Errorf("%s: GetOrLoad(%s) = %v", n.name, key, err)
		return
	}
	log.read(n.name, key, start, p.Version)
}

// write bumps key in the database, then deletes it through n.
func (n *faultNode) write(log *staleLog, key string) error {
	v := n.db.bump(key)
	err := n.c.Delete(context.Background(), key)
	log.wrote(key, v, time.Now(), err)
	return err
}

// workload runs readers on every node (a read of a random key every
// 500µs) and a writer on writer (a write every 20ms) until stop is closed;
// it returns the writes that returned an error.
func workload(t *testing.T, log *staleLog, keys []string, writer *faultNode, readers []*faultNode, stop <-chan struct{}) (failed *atomic.Int64, wait func()) {
	var wg sync.WaitGroup
	failed = new(atomic.Int64)
	for _, n := range readers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(500 * time.Microsecond):
				}
				n.read(t, log, keys[i%len(keys)])
			}
		})
	}
	wg.Go(func() { writeLoop(t, log, keys, writer, stop, failed) })
	return failed, wg.Wait
}

// writeLoop writes keys in turn through writer, one every 20ms, until stop
// is closed, and counts in failed the writes that returned ErrQueued (any
// other error fails t).
func writeLoop(t *testing.T, log *staleLog, keys []string, writer *faultNode, stop <-chan struct{}, failed *atomic.Int64) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
		if err := writer.write(log, keys[i%len(keys)]); err != nil {
			if !errors.Is(err, ErrQueued) {
				t.Errorf("Delete = %v, want nil or ErrQueued", err)
			}
			failed.Add(1)
		}
	}
}

// readAll reads every key on every node, every 5ms for d, judging each
// read in log.
func readAll(t *testing.T, log *staleLog, d time.Duration, keys []string, nodes ...*faultNode) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		for _, n := range nodes {
			for _, k := range keys {
				n.read(t, log, k)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// warm reads every key on every node until each serves it from L1.
func warm(t *testing.T, keys []string, nodes ...*faultNode) {
	t.Helper()
	for _, n := range nodes {
		for _, k := range keys {
			waitFor(t, 5*time.Second, n.name+" to serve "+k+" from L1", func() bool {
				before := n.c.Stats().L1Hits
				if _, err := n.c.GetOrLoad(context.Background(), k, n.db); err != nil {
					t.Fatal(err)
				}
				return n.c.Stats().L1Hits > before
			})
		}
	}
}

// converge checks that every node soon returns the database's version of
// every key.
func converge(t *testing.T, keys []string, nodes ...*faultNode) {
	t.Helper()
	for _, n := range nodes {
		for _, k := range keys {
			waitFor(t, 10*time.Second, n.name+" to return the current "+k, func() bool {
				p, err := n.c.GetOrLoad(context.Background(), k, n.db)
				return err == nil && p.Version == n.db.version(k)
			})
		}
	}
}

func numbered(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprint(prefix, i)
	}
	return keys
}

// TestFaultPause: Redis paused for a second (CLIENT PAUSE ALL, and WRITE,
// which stops scripts and PUBLISH but not GET or PING) while one node
// writes and every node reads. No read returns a value more than
// MaxStaleness older than an acknowledged Delete, nor more than a second
// older than one that returned ErrQueued. Before the outbox and the proof,
// a Delete timed out after OpTimeout inside the pause and was lost (Redis
// 7 does not run a timed-out client's command when the pause ends), and
// the other node served the old value from L1 until L1TTL. On a redis-server
// and on a real Cluster, where every master is paused at once.
func TestFaultPause(t *testing.T) {
	faultTargets(t, []string{"ALL", "WRITE"}, func(t *testing.T, ft faultTarget, mode string) {
		admin := ft.admin(t)
		_, a, b := ft.pair(t)
		// 100 keys, each written about every 2s: a lost invalidation is
		// not repaired by the next write of its key within the bounds.
		keys := numbered("p", 100)
		warm(t, keys, a, b)
		log := newStaleLog(DefaultMaxStaleness)
		stop := make(chan struct{})
		failed, wait := workload(t, log, keys, a, []*faultNode{a, b}, stop)
		time.Sleep(300 * time.Millisecond)
		ctx := context.Background()
		var paused atomic.Int64
		if err := onServers(ctx, admin, true, func(ctx context.Context, s *redis.Client) error {
			paused.Add(1)
			return s.Do(ctx, "CLIENT", "PAUSE", "1000", mode).Err()
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		if want := ft.masters(t); paused.Load() != int64(want) {
			t.Fatalf("paused %d servers, want every master: %d", paused.Load(), want)
		}
		close(stop)
		wait()
		log.check(t)
		converge(t, keys, a, b)
		t.Logf("%d reads; %d of the writes returned ErrQueued; A %+v; B %+v", log.reads.Load(), failed.Load(), a.c.Stats(), b.c.Stats())
	})
}

// TestFaultLatency: 300ms of added latency between the writer and Redis,
// more than OpTimeout. Writes wait it out (WriteTimeout) and succeed; the
// other node sees them within MaxStaleness. A write bound by OpTimeout
// instead would fail every Delete and leave the other node stale.
func TestFaultLatency(t *testing.T) {
	srv, p := proxied(t)
	db := newMemDB()
	a := newFaultNode(t, "A", p.Addr(), srv.Addr, db, Options{})
	b := newFaultNode(t, "B", srv.Addr, srv.Addr, db, Options{})
	keys := numbered("l", 10)
	warm(t, keys, a, b)
	log := newStaleLog(DefaultMaxStaleness)
	p.SetLatency(300 * time.Millisecond)
	stop := make(chan struct{})
	failed, wait := workload(t, log, keys, a, []*faultNode{a, b}, stop)
	time.Sleep(2 * time.Second)
	p.SetLatency(0)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wait()
	log.check(t)
	converge(t, keys, a, b)
	if n := failed.Load(); n != 0 {
		t.Errorf("%d writes failed under 300ms of latency with a WriteTimeout of %v", n, DefaultWriteTimeout)
	}
	t.Logf("%d reads; A %+v; B %+v", log.reads.Load(), a.c.Stats(), b.c.Stats())
}

// TestFaultQueued: the writer alone loses Redis (its connections go
// silent). Its Delete returns ErrQueued; it serves the key from the loader
// only while the invalidation is pending; the outbox delivers it as soon
// as Redis answers, and the other node, whose bus never stopped, drops the
// old value then. Without that retry the other node would serve the old
// value until L1TTL. On a redis-server and on a real Cluster, where the
// writer reaches every node through a proxy.
func TestFaultQueued(t *testing.T) {
	faultTargets(t, nil, func(t *testing.T, ft faultTarget, _ string) {
		p := newProxySet(t, ft)
		db := newMemDB()
		a := ft.node(t, "A", p.dial, db, Options{WriteTimeout: 300 * time.Millisecond})
		b := ft.node(t, "B", nil, db, Options{})
		ns := ft.namespace()
		keys := []string{"q"}
		warm(t, keys, a, b)
		ctx := context.Background()

		p.Silence()
		v := db.bump("q")
		start := time.Now()
		err := a.c.Delete(ctx, "q")
		if !errors.Is(err, ErrQueued) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Delete with Redis silent = %v, want ErrQueued and ErrUnavailable", err)
		}
		if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
			t.Errorf("Delete returned after %v, want about the WriteTimeout (300ms)", d)
		}
		if !a.c.bus.Pending(ns, "q") {
			t.Fatal("the invalidation is not pending in the outbox")
		}
		for range 5 {
			if p, err := a.c.GetOrLoad(ctx, "q", db); err != nil || p.Version != v {
				t.Fatalf("writer's read while pending = %+v, %v; want version %d from the loader", p, err, v)
			}
		}
		if _, err := a.c.Get(ctx, "q"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Get while pending = %v, want ErrUnavailable (neither L1 nor Redis may answer)", err)
		}
		p.Resume()
		resumed := time.Now()
		waitFor(t, 5*time.Second, "B to drop the old value", func() bool {
			p, err := b.c.GetOrLoad(ctx, "q", db)
			return err == nil && p.Version == v
		})
		t.Logf("B current %v after the writer's connections resumed", time.Since(resumed).Round(time.Millisecond))
		if s := a.c.Stats(); s.Queued != 1 || s.Delivered != 1 {
			t.Fatalf("writer's Stats: Queued %d, Delivered %d; want 1 and 1", s.Queued, s.Delivered)
		}
		if a.c.bus.Pending(ns, "q") {
			t.Fatal("still pending after delivery")
		}
	})
}

// TestFaultRestart: redis-server SIGKILLed and restarted, on the same port:
//
//   - "RDB": from a snapshot taken before 5 acknowledged Deletes, which
//     brings the deleted values back; no invalidation will ever come for
//     them. The caches see the new run_id and purge the namespace. Before,
//     the old values were served until their TTL.
//   - "AOF": with appendonly, killed before 5 Deletes, which fail
//     (ErrQueued) while it is down; it comes back with the values. The
//     outbox and the purge make every read current within the error bound.
//   - "empty": without persistence. Nothing old comes back; the run marker
//     is gone with the rest, so it is set again without a purge.
//   - "RDB, bus late": as "RDB", but every bus connection is frozen (a
//     proxy that holds everything, the server's close included) through
//     the restart, so no bus sees it: bus goroutines starved of CPU look
//     the same. The nodes' new data connections alone must make them check
//     the server before they read Redis.
//
// Every read from the kill on is judged: after an acknowledged Delete it
// must be current (bound 0), after a failed one within errorBound.
//
// It runs on a redis-server only. On a Cluster a killed master's replica
// takes over soon after the node timeout (1s here), and the old master,
// when it comes back, rejoins as a replica and resyncs from the new one,
// so no old value returns from its files (redistest cannot restart a
// cluster node anyway). The Cluster's counterpart, a replica promoted
// without the last writes, is a failover test, not this one.
func TestFaultRestart(t *testing.T) {
	for _, mode := range []string{"RDB", "AOF", "empty", "RDB, bus late"} {
		t.Run(mode, func(t *testing.T) {
			var srv *redistest.Server
			switch mode {
			case "RDB", "RDB, bus late":
				srv = redistest.StartPersistent(t)
			case "AOF":
				srv = redistest.StartPersistent(t, "--appendonly", "yes", "--appendfsync", "always")
			default:
				srv = redistest.Start(t)
			}
			admin := redistest.Client(t, srv.Addr)
			db, a, b := faultPair(t, srv.Addr)
			var busProxy *faultproxy.Proxy
			if mode == "RDB, bus late" {
				var err error
				if busProxy, err = faultproxy.New(srv.Addr); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { busProxy.Close() })
				late := &BusOptions{HealthInterval: time.Minute}
				a = newFaultNodeBus(t, "A", srv.Addr, busProxy.Addr(), db, Options{}, late)
				b = newFaultNodeBus(t, "B", srv.Addr, busProxy.Addr(), db, Options{}, late)
			}
			keys := numbered("r", 10)
			warm(t, keys, a, b)
			ctx := context.Background()
			log := newStaleLog(0)
			if mode != "AOF" && mode != "empty" {
				if err := admin.Save(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if mode != "AOF" {
				for _, k := range keys[:5] {
					if err := a.write(log, k); err != nil {
						t.Fatal(err)
					}
				}
				converge(t, keys, a, b)
			}
			if busProxy != nil {
				busProxy.Freeze()
			}
			srv.Kill()
			killed := time.Now()
			if mode == "AOF" {
				for _, k := range keys[:5] {
					if err := a.write(log, k); !errors.Is(err, ErrQueued) {
						t.Fatalf("Delete with the server killed = %v, want ErrQueued", err)
					}
				}
			}
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
			// The old value must be back. Look in the files the server loaded
			// (RDB, AOF): in Redis it may already be purged or delivered.
			old := bytes.Count(srv.Files(t), []byte("faults:{"+keys[0]+"}"))
			if (mode == "empty") != (old == 0) {
				t.Fatalf("after the restart the old value exists: %d; the test would prove nothing", old)
			}
			readAll(t, log, 3*time.Second, keys, a, b)
			log.check(t)
			if busProxy != nil {
				if !a.c.Bus().Healthy() || !b.c.Bus().Healthy() {
					t.Fatal("a bus noticed the restart: the test did not isolate a late bus")
				}
				busProxy.Thaw()
			}
			purges := a.c.Stats().Purges + b.c.Stats().Purges
			if mode == "empty" && purges != 0 || mode != "empty" && purges == 0 {
				t.Fatalf("%d purges after a restart %s", purges, mode)
			}
			converge(t, keys, a, b)
			t.Logf("restarted %v after the kill; A %+v", time.Since(killed).Round(time.Millisecond), a.c.Stats())
		})
	}
}

// TestFaultFailover: a failover, without Sentinel's machinery: the nodes
// reach Redis through an address (a proxy) that moves from the primary to a
// replica promoted when the primary dies. The replica stopped replicating
// before 5 acknowledged Deletes (replication lag, at its worst), so it
// comes up with the deleted values, the namespace's run marker of the
// primary, and another run_id: the caches purge the namespace, and no read
// from the kill on returns a deleted value.
//
// It runs on a redis-server only: it fakes a failover by moving a proxy,
// the one address the nodes know, to another server. A Cluster client
// learns every master's address from CLUSTER SLOTS and follows a real
// failover there (redistest.Cluster's Kill and WaitFailover), so moving an
// address under it tests nothing of the Cluster.
func TestFaultFailover(t *testing.T) {
	primary, replica := redistest.Start(t), redistest.Start(t)
	adminR := redistest.Client(t, replica.Addr)
	ctx := context.Background()
	host, port, _ := net.SplitHostPort(primary.Addr)
	if err := adminR.Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
		t.Fatal(err)
	}
	p, err := faultproxy.New(primary.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	_, a, b := faultPair(t, p.Addr())
	keys := numbered("f", 10)
	warm(t, keys, a, b)
	waitFor(t, 10*time.Second, "the replica to have every value", func() bool {
		n, _ := adminR.Exists(ctx, "faults:run_id", "faults:{"+keys[0]+"}", "faults:{"+keys[9]+"}").Result()
		return n == 3
	})
	if err := adminR.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	log := newStaleLog(0)
	for _, k := range keys[:5] {
		if err := a.write(log, k); err != nil {
			t.Fatal(err)
		}
	}
	converge(t, keys, a, b)
	if n, _ := adminR.Exists(ctx, "faults:{"+keys[0]+"}").Result(); n != 1 {
		t.Fatal("the replica lost the deleted value: the test would prove nothing")
	}

	primary.Kill()
	p.SetTarget(replica.Addr)
	p.CutAll()
	readAll(t, log, 3*time.Second, keys, a, b)
	log.check(t)
	if a.c.Stats().Purges+b.c.Stats().Purges == 0 {
		t.Fatal("no node purged the namespace after the failover")
	}
	converge(t, keys, a, b)
}

// TestFaultReadDuringGap: a load began before a Delete that its node
// missed (its bus was down). A read 500ms after the Delete, during the gap
// or just after the bus resubscribed, must not join that load: joining it
// would return the old version when the load ended. On a redis-server and
// on a real Cluster, where B's bus (sharded: a connection per master)
// reaches every node through a proxy.
func TestFaultReadDuringGap(t *testing.T) {
	faultTargets(t, []string{"during the gap", "after the resubscription", "bus frozen"}, func(t *testing.T, ft faultTarget, when string) {
		p := newProxySet(t, ft)
		db := newMemDB()
		a := ft.node(t, "A", nil, db, Options{})
		// "bus frozen": B's bus stays healthy (a long health interval)
		// but cannot prove itself fresh, so only the rule that flights
		// are joinable for MaxStaleness while unproven protects it.
		b := newFaultNodeOn(t, "B", ft.client(t, nil), ft.client(t, p.dial), db, Options{Namespace: ft.namespace()},
			&BusOptions{HealthInterval: time.Minute})
		ctx := context.Background()
		db.bump("g")

		// B starts a load that reads version 1, then stalls.
		inLoad, release := make(chan struct{}), make(chan struct{})
		var first atomic.Bool
		db.mu.Lock()
		db.gate = func(string) {
			if first.CompareAndSwap(false, true) {
				close(inLoad)
				<-release
			}
		}
		db.mu.Unlock()
		stalled := make(chan Product, 1)
		go func() {
			p, _ := b.c.GetOrLoad(ctx, "g", db)
			stalled <- p
		}()
		<-inLoad
		defer func() {
			close(release)
			<-stalled
		}()

		// B's bus goes down and cannot come back (or freezes); A writes.
		if when == "bus frozen" {
			p.Freeze()
		} else {
			p.Set(faultproxy.Silent, faultproxy.NewConns)
			p.CutAll()
			waitFor(t, 5*time.Second, "B's bus to go down", func() bool { return !b.c.Bus().Healthy() })
		}
		v := db.bump("g")
		if err := a.c.Delete(ctx, "g"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
		if when == "after the resubscription" {
			p.Resume()
			waitFor(t, 10*time.Second, "B's bus to come back", b.c.Bus().Healthy)
		}
		got := make(chan Product, 1)
		go func() {
			p, _ := b.c.GetOrLoad(ctx, "g", db)
			got <- p
		}()
		select {
		case p := <-got:
			if p.Version != v {
				t.Fatalf("read 500ms after the Delete returned version %d, want %d", p.Version, v)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the read joined the load that began before the Delete (it waits for it)")
		}
		if when == "bus frozen" {
			if !b.c.Bus().Healthy() {
				t.Fatal("B's bus went down: the test did not isolate the unproven case")
			}
			p.Thaw()
		}
	})
}

// TestFaultBreaker: with Redis silent (every call would wait OpTimeout),
// the breaker opens after BreakerFailures reads and later reads cost the
// loader plus microseconds; a probe closes it once Redis answers again.
// "all silent" silences the bus's connection too, as a Redis that is down
// would: a read must not wait for a bus that has been down for a while.
func TestFaultBreaker(t *testing.T) {
	for _, tc := range []struct {
		name   string
		busToo bool
	}{{"data silent", false}, {"all silent", true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv, p := proxied(t)
			db := newMemDB()
			busAddr := srv.Addr
			if tc.busToo {
				busAddr = p.Addr()
			}
			a := newFaultNode(t, "A", p.Addr(), busAddr, db, Options{})
			ctx := context.Background()
			p.Silence()
			for i := range DefaultBreakerFailures {
				if _, err := a.c.GetOrLoad(ctx, fmt.Sprint("cold", i), db); err != nil {
					t.Fatal(err)
				}
			}
			if tc.busToo {
				// The bus goes down within 2 health intervals (400ms) and
				// may do so before the breaker has seen 3 failures: then
				// reads skip Redis because the bus is down. Either way they
				// must not wait for Redis.
				waitFor(t, 5*time.Second, "the bus to go down", func() bool { return !a.c.Bus().Healthy() })
				time.Sleep(2 * l2.DefaultOpTimeout)
			} else if s := a.c.Stats(); s.BreakerOpens != 1 {
				t.Fatalf("Stats.BreakerOpens = %d after %d reads that timed out, want 1", s.BreakerOpens, DefaultBreakerFailures)
			}
			const n = 50
			start := time.Now()
			for i := range n {
				if _, err := a.c.GetOrLoad(ctx, fmt.Sprint("open", i), db); err != nil {
					t.Fatal(err)
				}
			}
			per := time.Since(start) / n
			t.Logf("a read with the breaker open: %v (OpTimeout %v)", per, l2.DefaultOpTimeout)
			if per > l2.DefaultOpTimeout/10 {
				t.Fatalf("a read with the breaker open took %v on average; it should not wait for Redis", per)
			}
			if !tc.busToo && a.c.brk.allow() {
				t.Fatal("the breaker closed while Redis was silent")
			}
			p.Resume()
			waitFor(t, 5*time.Second, "a probe to close the breaker", func() bool { return a.c.brk.allow() })
			waitFor(t, 10*time.Second, "the cache to use Redis again", func() bool { return a.c.WaitReady(ctx) == nil })
			before := a.c.Stats().L2Hits
			if err := a.c.Set(ctx, "after", Product{Version: 7}); err != nil {
				t.Fatal(err)
			}
			a.c.dropL1("after")
			if p, err := a.c.Get(ctx, "after"); err != nil || p.Version != 7 || a.c.Stats().L2Hits == before {
				t.Fatalf("after the breaker closed, Get = %+v, %v, L2 hits %d → %d; want Redis to answer", p, err, before, a.c.Stats().L2Hits)
			}
		})
	}
}

// TestFaultOutboxOverflow: more keys queued than the outbox holds fold the
// namespace into one purge. While it is pending the writer serves none of
// the namespace from Redis or L1; when Redis answers, the namespace is
// purged and every other node drops its L1 of it (a Flush message). On a
// redis-server and on a real Cluster, where the purge covers every master
// and the writer reaches every node through a proxy.
func TestFaultOutboxOverflow(t *testing.T) {
	faultTargets(t, nil, func(t *testing.T, ft faultTarget, _ string) { testFaultOutboxOverflow(t, ft) })
}

func testFaultOutboxOverflow(t *testing.T, ft faultTarget) {
	p := newProxySet(t, ft)
	db := newMemDB()
	ns := ft.namespace()
	a := newFaultNodeOn(t, "A", ft.client(t, p.dial), ft.client(t, nil), db, Options{Namespace: ns, WriteTimeout: 100 * time.Millisecond},
		&BusOptions{HealthInterval: 200 * time.Millisecond, OutboxSize: 2})
	b := ft.node(t, "B", nil, db, Options{})
	keys := numbered("o", 4)
	warm(t, keys, a, b)
	ctx := context.Background()
	resetsB := b.c.Stats().Resets
	p.Silence()
	for _, k := range keys[:3] {
		db.bump(k)
		if err := a.c.Delete(ctx, k); !errors.Is(err, ErrQueued) {
			t.Fatalf("Delete(%s) with Redis silent = %v, want ErrQueued", k, err)
		}
	}
	// keys[3] was never written, but the whole namespace is being purged.
	if !a.c.bus.Pending(ns, keys[3]) {
		t.Fatal("after the overflow, a key of the namespace is not pending")
	}
	p.Resume()
	waitFor(t, 5*time.Second, "the purge", func() bool { return !a.c.bus.Pending(ns, keys[3]) })
	if s := a.c.Stats(); s.Purges != 1 {
		t.Fatalf("A's Stats.Purges = %d, want 1", s.Purges)
	}
	admin := ft.admin(t)
	for _, k := range keys {
		if n, err := admin.Exists(ctx, ns+":{"+k+"}").Result(); err != nil || n != 0 {
			t.Fatalf("EXISTS %s:{%s} = %d, %v: the purge left a value of the namespace in Redis", ns, k, n, err)
		}
	}
	waitFor(t, 5*time.Second, "B to reset the namespace", func() bool { return b.c.Stats().Resets > resetsB })
	converge(t, keys, a, b)
}
