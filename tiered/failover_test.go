package tiered

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
)

// Failover tests: a real replicated Redis (a Cluster of 3 masters and 3
// replicas, or a master, a replica and 3 sentinels) whose master is
// SIGKILLed while three nodes read and one writes. The promises checked,
// which docs/operations.md states with the figures these tests log:
//
//   - reads go on: no read fails (the loader covers the keys of the dead
//     master until a replica takes over);
//   - a write the dead master cannot take returns ErrQueued, and the
//     outbox delivers it once the replica has taken over;
//   - no read returns a value older than an acknowledged write by more than
//     MaxStaleness, nor one older than a queued write by more than
//     failoverSlack after the failover completed.

// failoverSlack bounds, in these tests, how long after the failover
// completed a queued write may still be unseen: the writer's client finds
// the new master (a slot map reload, at most every 200 ms) and its outbox
// delivers (backoff up to a second). A sanity bound; the figures are logged.
const failoverSlack = 3 * time.Second

// haTarget is a replicated Redis that a test can fail over.
type haTarget struct {
	// client returns a new client for one node's cache or bus.
	client func(t *testing.T) redis.UniversalClient
	// kill SIGKILLs the master that serves key.
	kill func(t *testing.T, key string)
	// wait returns once a replica has taken over and clients can find it.
	wait func(ctx context.Context) error
}

// haRead is one read of the failover workload.
type haRead struct {
	node       string
	key        string
	start, end time.Time
	version    int
}

// haNodes returns a ready node of namespace "failover" on tg for each of
// names, each with clients of its own.
func haNodes(t *testing.T, tg haTarget, db *memDB, names ...string) []*faultNode {
	t.Helper()
	var nodes []*faultNode
	for _, name := range names {
		bus, err := NewBus(tg.client(t), &BusOptions{HealthInterval: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bus.Close() })
		c, err := New[Product](tg.client(t), &Options{Namespace: "failover", TTL: time.Minute, Bus: bus})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
		err = c.WaitReady(ctx)
		cancel()
		if err != nil {
			t.Fatalf("%s never became ready: %v", name, err)
		}
		nodes = append(nodes, &faultNode{name: name, c: c, db: db})
	}
	return nodes
}

// failover runs the workload on tg, kills the master of keys[0] after a
// second, waits for the failover, runs two more seconds, and judges every
// read.
func failover(t *testing.T, tg haTarget) {
	db := newMemDB()
	nodes := haNodes(t, tg, db, "A", "B", "C")
	writer := nodes[0]
	keys := numbered("fo", 60) // spread over every master of a Cluster
	warm(t, keys, nodes...)

	var (
		mu       sync.Mutex
		reads    []haRead
		log      = newStaleLog(0) // records the writes; judged below
		readErrs atomic.Int64
		queued   atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for _, n := range nodes {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(500 * time.Microsecond):
				}
				k := keys[i%len(keys)]
				start := time.Now()
				p, err := n.c.GetOrLoad(context.Background(), k, db)
				if err != nil {
					if readErrs.Add(1) <= 5 {
						t.Errorf("%s: GetOrLoad(%s) = %v; reads must go on through a failover", n.name, k, err)
					}
					continue
				}
				mu.Lock()
				reads = append(reads, haRead{n.name, k, start, time.Now(), p.Version})
				mu.Unlock()
			}
		})
	}
	wg.Go(func() { writeLoop(t, log, keys, writer, stop, &queued) })

	time.Sleep(time.Second)
	killed := time.Now()
	tg.kill(t, keys[0])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := tg.wait(ctx)
	cancel()
	if err != nil {
		close(stop)
		wg.Wait()
		t.Fatalf("no failover: %v", err)
	}
	done := time.Now()
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	converge(t, keys, nodes...)

	// Judge every read against the writes of its key.
	log.mu.Lock()
	defer log.mu.Unlock()
	var (
		stale  []string
		behind int           // reads older than a queued write
		late   time.Duration // the most, from the write's return
	)
	perSecond := func(from, to time.Time) float64 {
		n := 0
		for _, r := range reads {
			if !r.start.Before(from) && r.start.Before(to) {
				n++
			}
		}
		return float64(n) / to.Sub(from).Seconds()
	}
	for _, r := range reads {
		for _, w := range log.writes[r.key] {
			if w.version <= r.version || r.start.Before(w.returned) {
				continue
			}
			if w.err == nil && r.start.Sub(w.returned) > DefaultMaxStaleness {
				stale = append(stale, fmt.Sprintf("%s read %s at version %d, %v after the acknowledged write of version %d",
					r.node, r.key, r.version, r.start.Sub(w.returned).Round(time.Millisecond), w.version))
				break
			}
			if w.err != nil {
				from := w.returned
				if from.Before(done) {
					from = done
				}
				behind++
				late = max(late, r.start.Sub(w.returned))
				if r.start.Sub(from) > failoverSlack {
					stale = append(stale, fmt.Sprintf("%s read %s at version %d, %v after the failover, past the queued write of version %d",
						r.node, r.key, r.version, r.start.Sub(done).Round(time.Millisecond), w.version))
					break
				}
			}
		}
	}
	if len(stale) > 0 {
		t.Errorf("%d of %d reads were stale past their bound; the first ones:", len(stale), len(reads))
		for _, s := range stale[:min(len(stale), 10)] {
			t.Error("  ", s)
		}
	}
	var firstFail, lastFail time.Time
	for _, ws := range log.writes {
		for _, w := range ws {
			if w.err != nil {
				if firstFail.IsZero() || w.returned.Before(firstFail) {
					firstFail = w.returned
				}
				if w.returned.After(lastFail) {
					lastFail = w.returned
				}
			}
		}
	}
	window := time.Duration(0)
	if !firstFail.IsZero() {
		window = lastFail.Sub(killed)
	}
	slices.SortFunc(reads, func(a, b haRead) int { return a.start.Compare(b.start) })
	t.Logf("failover took %v; reads/s before %.0f, during %.0f, after %.0f; %d writes queued, the last %v after the kill; "+
		"%d reads older than a queued write, at most %v after it returned; read errors %d",
		done.Sub(killed).Round(time.Millisecond), perSecond(killed.Add(-time.Second), killed), perSecond(killed, done),
		perSecond(done, done.Add(2*time.Second)), queued.Load(), window.Round(time.Millisecond),
		behind, late.Round(time.Millisecond), readErrs.Load())
	if queued.Load() == 0 {
		t.Error("no write failed: the kill did not hit the writer, and the test proved nothing about the outbox")
	}
	var delivered uint64
	for _, n := range nodes {
		delivered += n.c.Stats().Delivered
	}
	if delivered == 0 {
		t.Error("the outbox delivered nothing")
	}
}

// clusterClient is a node's Cluster client, configured as
// docs/operations.md recommends.
func clusterClient(t *testing.T, cl *redistest.Cluster) redis.UniversalClient {
	return cl.Client(t, &redis.ClusterOptions{MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: time.Second, ContextTimeoutEnabled: true, PoolSize: 16})
}

// TestClusterFailover: SIGKILL of a master of a real Cluster (3 masters,
// 3 replicas, cluster-node-timeout 1s) under load, with clients as
// docs/operations.md recommends.
func TestClusterFailover(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	failover(t, haTarget{
		client: func(t *testing.T) redis.UniversalClient { return clusterClient(t, cl) },
		kill: func(t *testing.T, key string) {
			addr, err := cl.MasterForKey(context.Background(), "failover:{"+key+"}")
			if err != nil {
				t.Fatal(err)
			}
			if err := cl.Kill(addr); err != nil {
				t.Fatal(err)
			}
		},
		wait: cl.WaitFailover,
	})
}

// TestSentinelFailover: SIGKILL of the master of a Sentinel setup (a
// master, a replica, 3 sentinels, down-after 1s) under load, through
// redis.NewFailoverClient.
func TestSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t, nil)
	failover(t, haTarget{
		client: func(t *testing.T) redis.UniversalClient {
			return s.FailoverClient(t, &redis.FailoverOptions{MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
				ReadTimeout: time.Second, ContextTimeoutEnabled: true, PoolSize: 16})
		},
		kill: func(t *testing.T, _ string) { s.KillMaster() },
		wait: func(ctx context.Context) error {
			_, err := s.WaitFailover(ctx)
			return err
		},
	})
}

// TestClusterFailoverLostWrites: a master acknowledges 5 Deletes that it
// never sends to its replica (the replica's link was cut, and it cannot
// resync: its masterauth is wrong), then dies; the replica takes over with
// the deleted values. The caches see the master changed (its run marker,
// replicated, names the dead master) and purge its part of the namespace,
// so no read from the kill on returns a deleted value. Without the check
// (l2.Store.CheckShards) the deleted values came back and were served.
func TestClusterFailoverLostWrites(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := newMemDB()
	tg := haTarget{client: func(t *testing.T) redis.UniversalClient { return clusterClient(t, cl) }}
	nodes := haNodes(t, tg, db, "A", "B")
	a := nodes[0]

	// Keys of one master, and its replica.
	master, err := cl.MasterForKey(ctx, "failover:{lw0}")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for i := 0; len(keys) < 10; i++ {
		k := fmt.Sprint("lw", i)
		if m, err := cl.MasterForKey(ctx, "failover:{"+k+"}"); err == nil && m == master {
			keys = append(keys, k)
		}
	}
	var replica string
	slots, err := cl.Slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range slots {
		if r.Master == master && len(r.Replicas) > 0 {
			replica = r.Replicas[0]
		}
	}
	if replica == "" {
		t.Fatalf("no replica of %s in %v", master, slots)
	}
	warm(t, keys, nodes...)
	m, r := redistest.Client(t, master), redistest.Client(t, replica)
	offset := func(c *redis.Client, field string) string {
		info, _ := c.Info(ctx, "replication").Result()
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
				return v
			}
		}
		return ""
	}
	waitFor(t, 10*time.Second, "the replica to have every value", func() bool {
		return offset(m, "master_repl_offset") == offset(r, "slave_repl_offset")
	})

	// Cut the replica off for good, then 5 acknowledged Deletes it never
	// sees, then the master dies.
	if err := r.ConfigSet(ctx, "masterauth", "wrong").Err(); err != nil {
		t.Fatal(err)
	}
	if err := m.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	log := newStaleLog(DefaultMaxStaleness)
	for _, k := range keys[:5] {
		if err := a.write(log, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.Kill(master); err != nil {
		t.Fatal(err)
	}
	if err := cl.WaitFailover(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Exists(ctx, "failover:{"+keys[0]+"}").Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS of a deleted key on the promoted replica = %d, %v; want 1 (lost Delete), or the test proves nothing", n, err)
	}
	purges := func() (n uint64) {
		for _, nd := range nodes {
			n += nd.c.Stats().Purges
		}
		return n
	}
	readAll(t, log, 3*time.Second, keys, nodes...)
	// Until its clients reach the new master a node reads through to the
	// loader (a slow machine may take longer than the reads above); once
	// they do, the check purges before Redis is read.
	waitFor(t, 20*time.Second, "a node to purge the failed-over master's part of the namespace", func() bool {
		readAll(t, log, 10*time.Millisecond, keys, nodes...)
		return purges() > 0
	})
	readAll(t, log, time.Second, keys, nodes...)
	log.check(t)
	converge(t, keys, nodes...)
	t.Logf("%d reads, %d purges", log.reads.Load(), purges())
}
