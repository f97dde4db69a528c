package tiered

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tieredcache/tiered/internal/redistest"
	"github.com/tieredcache/tiered/pubsub"
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

// failover runs the workload on tg, kills the master of keys[0] after a
// second, waits for the failover, runs two more seconds, and judges every
// read.
func failover(t *testing.T, tg haTarget) {
	db := newMemDB()
	var nodes []*faultNode
	for _, name := range []string{"A", "B", "C"} {
		bus, err := pubsub.New(tg.client(t), &pubsub.Options{HealthInterval: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bus.Close() })
		c, err := New[Product](tg.client(t), &Options{Namespace: "failover", TTL: time.Minute, Bus: bus})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = c.WaitReady(ctx)
		cancel()
		if err != nil {
			t.Fatalf("%s never became ready: %v", name, err)
		}
		nodes = append(nodes, &faultNode{name: name, c: c, db: db})
	}
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
	wg.Go(func() {
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
				queued.Add(1)
			}
		}
	})

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

// TestClusterFailover: SIGKILL of a master of a real Cluster (3 masters,
// 3 replicas, cluster-node-timeout 1s) under load, with clients as
// docs/operations.md recommends.
func TestClusterFailover(t *testing.T) {
	cl := redistest.StartCluster(t, nil)
	failover(t, haTarget{
		client: func(t *testing.T) redis.UniversalClient {
			return cl.Client(t, &redis.ClusterOptions{MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
				ReadTimeout: time.Second, ContextTimeoutEnabled: true, PoolSize: 16})
		},
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
