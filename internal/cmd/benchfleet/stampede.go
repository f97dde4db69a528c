package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tieredcache/tiered/internal/stats"
	"github.com/tieredcache/tiered/tiered"
)

// The stampede workload: nodes × callers goroutines released together on a
// cold key, one key after another, all calling GetOrLoad with a loader that
// sleeps -loader. It counts the loads per key and times the followers.

type stampedeResult struct {
	loadsMean                float64
	loadsMax                 int64
	followerP50, followerP99 time.Duration
	followerMax              time.Duration
	leaderP50                time.Duration
	gcs                      uint32 // GC cycles that ended while a measured key's callers ran
}

// callerKey is the context key of a caller's ID. The loader runs on a
// context that keeps the values of the context of the caller that started
// the flight (see tiered.Loader), so it can tell which caller led the load.
type callerKey struct{}

// keyResult holds what one stampede on one key measured.
type keyResult struct {
	loads            int64
	follower, leader []time.Duration
	sameNode, other  []time.Duration // followers on the leader's node, and on the others
	// The leader's time in three parts: from its start to the loader's start
	// (L1 miss, Redis GET, lease), the loader itself (a timer of cfg.loader,
	// which fires late by the scheduler's slack), and from the loader's end
	// to its return (the fill). tail is the last caller's return minus the
	// loader's end.
	preLoad, inLoad, postLoad, tail time.Duration
	gcs                             uint32        // GC cycles that ended while the callers ran
	spread                          time.Duration // last caller's start minus the first's
}

// stampedeSamples gathers the figures of the measured keys.
type stampedeSamples struct {
	follower, leader, sameNode, other []time.Duration
	preLoad, inLoad, postLoad, tail   []time.Duration
	loadsSum                          int64
}

func (s *stampedeSamples) add(kr keyResult) {
	s.follower = append(s.follower, kr.follower...)
	s.leader = append(s.leader, kr.leader...)
	s.sameNode = append(s.sameNode, kr.sameNode...)
	s.other = append(s.other, kr.other...)
	s.preLoad = append(s.preLoad, kr.preLoad)
	s.inLoad = append(s.inLoad, kr.inLoad)
	s.postLoad = append(s.postLoad, kr.postLoad)
	s.tail = append(s.tail, kr.tail)
	s.loadsSum += kr.loads
}

// sort sorts every sample list, for their percentiles.
func (s *stampedeSamples) sort() {
	for _, ds := range [][]time.Duration{s.follower, s.leader, s.sameNode, s.other, s.preLoad, s.inLoad, s.postLoad, s.tail} {
		slices.Sort(ds)
	}
}

// stampede runs cfg.warmup warm-up keys, then cfg.keys measured keys, one
// key after another; see stampedeKey.
//
// The warm-up keys run the same workload on the same nodes but are not
// counted: the first stampede of a process pays one-time costs (growing 300
// new goroutine stacks, the runtime's first scheduling of that many
// goroutines, the clients' first connections, loading the Lua scripts) that
// a benchmark iteration should not include. Their follower p99 is printed on
// stderr so that the cost stays visible.
func stampede(ctx context.Context, cfg config, nodes []*node) (stampedeResult, error) {
	var (
		res stampedeResult
		s   stampedeSamples
	)
	for k := range cfg.warmup {
		kr, err := stampedeKey(ctx, cfg, nodes, fmt.Sprintf("warmup-%d", k))
		if err != nil {
			return res, err
		}
		fmt.Fprintf(os.Stderr, "benchfleet: stampede: warm-up key %d (not counted): loads=%d follower p99=%.2fms max=%.2fms; leader start→loader %.2fms\n",
			k, kr.loads, msf(stats.Percentile(kr.follower, .99)), msf(slices.Max(kr.follower)), msf(kr.preLoad))
	}
	for k := range cfg.keys {
		key := fmt.Sprintf("stampede-%d", k)
		kr, err := stampedeKey(ctx, cfg, nodes, key)
		if err != nil {
			return res, err
		}
		s.add(kr)
		res.gcs += kr.gcs
		res.loadsMax = max(res.loadsMax, kr.loads)
		if kr.loads != 1 {
			fmt.Fprintf(os.Stderr, "benchfleet: stampede: key %s loaded %d times\n", key, kr.loads)
		}
		if cfg.verbose {
			fmt.Fprintf(os.Stderr, "benchfleet: stampede: key %s: follower p99=%.2fms max=%.2fms; leader start→loader %.2fms, loader %.2fms, loader→return %.2fms; loader's end→last return %.2fms; start spread %.2fms; gc cycles %d\n",
				key, msf(stats.Percentile(kr.follower, .99)), msf(slices.Max(kr.follower)), msf(kr.preLoad), msf(kr.inLoad), msf(kr.postLoad), msf(kr.tail), msf(kr.spread), kr.gcs)
		}
	}
	s.sort()
	s.print(cfg, res.gcs)
	res.loadsMean = float64(s.loadsSum) / float64(cfg.keys)
	res.followerP50 = stats.Percentile(s.follower, 0.50)
	res.followerP99 = stats.Percentile(s.follower, 0.99)
	res.followerMax = stats.Percentile(s.follower, 1)
	res.leaderP50 = stats.Percentile(s.leader, 0.50)
	return res, nil
}

// print prints, on stderr, where the time of the measured keys went; gcs
// is the GC cycles that ended during them.
func (s *stampedeSamples) print(cfg config, gcs uint32) {
	p := stats.Percentile
	three := func(ds []time.Duration) string {
		return fmt.Sprintf("%.2f/%.2f/%.2f", msf(p(ds, .5)), msf(p(ds, .99)), msf(p(ds, 1)))
	}
	fmt.Fprintf(os.Stderr, "benchfleet: stampede: %d follower and %d leader samples; followers on the leader's node p50=%.2fms p99=%.2fms, on other nodes p50=%.2fms p99=%.2fms max=%.2fms\n",
		len(s.follower), len(s.leader), msf(p(s.sameNode, 0.5)), msf(p(s.sameNode, 0.99)), msf(p(s.other, 0.5)), msf(p(s.other, 0.99)), msf(p(s.other, 1)))
	fmt.Fprintf(os.Stderr, "benchfleet: stampede: per key p50/p99/max ms: leader start→loader %s, loader (a %v timer) %s, loader→leader's return %s; loader's end→last caller's return %s; GC cycles during measured keys %d\n",
		three(s.preLoad), cfg.loader, three(s.inLoad), three(s.postLoad), three(s.tail), gcs)
}

// stampedeKey releases nodes × callers goroutines together on the cold key,
// all calling GetOrLoad with a loader that sleeps cfg.loader.
//
// Follower latency: the leader of a key is the caller whose flight ran the
// loader (the loader reads its ID from its context). Every other caller, on
// every node, is a follower: the callers that joined the leader's flight on
// the same node, and those on the other nodes whose flights waited for the
// lease. A caller's latency runs from the moment its goroutine passed the
// start barrier to GetOrLoad's return.
func stampedeKey(ctx context.Context, cfg config, nodes []*node, key string) (keyResult, error) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gcBefore := ms.NumGC
	loads := &keyLoads{leaders: map[int]bool{}}
	t0s, ends, err := releaseCallers(ctx, cfg, nodes, key, loads.loader(cfg.loader))
	if err != nil {
		return keyResult{}, err
	}
	runtime.ReadMemStats(&ms)
	kr := loads.result(cfg.callers, t0s, ends)
	kr.gcs = ms.NumGC - gcBefore
	return kr, nil
}

// keyLoads records the loads of one stampede key.
type keyLoads struct {
	n       atomic.Int64
	mu      sync.Mutex   // guards leaders and span
	leaders map[int]bool // caller IDs whose flight ran the loader
	span    [2]time.Time // the last load's start and end
}

// loader returns the key's loader: it records the ID of the caller that
// led the flight, sleeps d and returns version 1.
func (l *keyLoads) loader(d time.Duration) tiered.Loader[Item] {
	return tiered.LoaderFunc[Item](func(lctx context.Context, key string) (Item, error) {
		l0 := time.Now()
		l.n.Add(1)
		id, ok := lctx.Value(callerKey{}).(int)
		if !ok {
			return Item{}, errors.New("loader context lacks the caller ID")
		}
		l.mu.Lock()
		l.leaders[id] = true
		l.mu.Unlock()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-lctx.Done():
			return Item{}, lctx.Err()
		}
		l.mu.Lock()
		l.span = [2]time.Time{l0, time.Now()}
		l.mu.Unlock()
		return Item{Key: key, Version: 1}, nil
	})
}

// releaseCallers starts cfg.callers goroutines on each node, releases them
// together on key and returns, by caller ID (node ID × cfg.callers + the
// goroutine's index), when each passed the start barrier and when its
// GetOrLoad returned; and the errors of the calls that failed or returned
// the wrong value.
func releaseCallers(ctx context.Context, cfg config, nodes []*node, key string, loader tiered.Loader[Item]) (t0s, ends []time.Time, err error) {
	total := len(nodes) * cfg.callers
	t0s, ends = make([]time.Time, total), make([]time.Time, total)
	errs := make([]error, total)
	start := make(chan struct{})
	var ready, done sync.WaitGroup
	for _, n := range nodes {
		for g := range cfg.callers {
			id := n.id*cfg.callers + g
			cctx := context.WithValue(ctx, callerKey{}, id)
			ready.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				ready.Done()
				<-start
				t0s[id] = time.Now()
				v, err := n.cache.GetOrLoad(cctx, key, loader)
				ends[id] = time.Now()
				if err == nil && (v.Key != key || v.Version != 1) {
					err = fmt.Errorf("node %d got %+v for %s", n.id, v, key)
				}
				errs[id] = err
			}()
		}
	}
	ready.Wait()
	close(start)
	done.Wait()
	return t0s, ends, errors.Join(errs...)
}

// result splits the callers' latencies, from their start and return times
// by caller ID, into leaders and followers (see stampedeKey), and the
// leader's time into its parts.
func (l *keyLoads) result(callers int, t0s, ends []time.Time) keyResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	kr := keyResult{loads: l.n.Load()}
	leaderNodes := map[int]bool{}
	for id := range l.leaders {
		leaderNodes[id/callers] = true
	}
	for id := range t0s {
		d := ends[id].Sub(t0s[id])
		switch {
		case l.leaders[id]:
			kr.leader = append(kr.leader, d)
			// With more than one load (a failure of the run), this is the
			// last load and some leader.
			kr.preLoad = l.span[0].Sub(t0s[id])
			kr.postLoad = ends[id].Sub(l.span[1])
		case leaderNodes[id/callers]:
			kr.follower = append(kr.follower, d)
			kr.sameNode = append(kr.sameNode, d)
		default:
			kr.follower = append(kr.follower, d)
			kr.other = append(kr.other, d)
		}
	}
	kr.inLoad = l.span[1].Sub(l.span[0])
	kr.spread = slices.MaxFunc(t0s, time.Time.Compare).Sub(slices.MinFunc(t0s, time.Time.Compare))
	kr.tail = slices.MaxFunc(ends, time.Time.Compare).Sub(l.span[1])
	return kr
}
