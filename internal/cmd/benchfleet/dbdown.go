package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tieredcache/tiered/tiered"
)

// The dbdown workload: the database fails while its values expire.
// -nodes nodes (TTL downTTL, default Jitter) load downKeys keys, node 0
// with one GetMany and the others from Redis; then the loader returns an
// error for downOutage, while downReaders goroutines on every node call
// GetOrLoad on uniformly random keys, flat out (yielding between calls, as
// in hotexpiry). Every value expires early in the outage. Two runs, each on
// a redis-server and nodes of its own: maxstale=off, and maxstale=on with
// Options.MaxStale = downMaxStale (FailSafeThrottle default).
//
// Fields of the line: reads, the GetOrLoad calls during the outage;
// errors, those that returned an error; stale_served, the sum of the
// nodes' Stats.StaleServed; loader_calls, the loader's calls during the
// outage; first_error_ms, when the first error was returned, since the
// outage began (-1: none).
//
// The acceptance, for maxstale=on: errors=0 (every expired value is still
// in Redis for the whole outage); a run that misses it makes the exit
// status non-zero.

const (
	downKeys     = 200
	downTTL      = 500 * time.Millisecond
	downOutage   = 5 * time.Second
	downReaders  = 4 // per node
	downMaxStale = time.Minute
)

// errDBDown is the loader's error during the outage.
var errDBDown = errors.New("benchfleet: database down")

// downResult is what one dbdown run measured.
type downResult struct {
	reads, errs, staleServed, loaderCalls uint64
	firstErrAt                            time.Duration // -1: none
	firstErr                              error
	elapsed                               time.Duration
	nodeStats                             []tiered.Stats
}

// firstErrorMS is first_error_ms: -1 for no error.
func (r downResult) firstErrorMS() float64 {
	if r.firstErrAt < 0 {
		return -1
	}
	return msf(r.firstErrAt)
}

func runDBDown(ctx context.Context, cfg config) error {
	return offOn(ctx, "dbdown", "maxstale", downMaxStale, func(addr, name string, maxStale time.Duration) (error, error) {
		r, err := dbDown(ctx, cfg, addr, maxStale)
		if err != nil {
			return nil, err
		}
		fmt.Printf("workload=dbdown maxstale=%s nodes=%d readers=%d keys=%d ttl_ms=%d outage_s=%.1f reads=%d errors=%d stale_served=%d loader_calls=%d first_error_ms=%.1f\n",
			name, cfg.nodes, cfg.nodes*downReaders, downKeys, downTTL.Milliseconds(), r.elapsed.Seconds(),
			r.reads, r.errs, r.staleServed, r.loaderCalls, r.firstErrorMS())
		for i, s := range r.nodeStats {
			fmt.Fprintf(os.Stderr, "benchfleet: dbdown maxstale=%s: node %d: %+v\n", name, i, s)
		}
		if r.firstErr != nil {
			fmt.Fprintf(os.Stderr, "benchfleet: dbdown maxstale=%s: first error: %v\n", name, r.firstErr)
		}
		if maxStale == 0 {
			return nil, nil
		}
		fmt.Fprintf(os.Stderr, "benchfleet: dbdown maxstale=on: errors=%d (target 0): %s; loader calls per key and node %.1f over %.1fs\n",
			r.errs, verdict(r.errs == 0), float64(r.loaderCalls)/float64(downKeys*cfg.nodes), r.elapsed.Seconds())
		if r.errs > 0 {
			return fmt.Errorf("maxstale=on: %d errors, first %.1fms into the outage: %w", r.errs, msf(r.firstErrAt), r.firstErr), nil
		}
		return nil, nil
	})
}

// dbDown makes one run with Options.MaxStale = maxStale on a server at
// addr.
func dbDown(ctx context.Context, cfg config, addr string, maxStale time.Duration) (downResult, error) {
	res := downResult{firstErrAt: -1}
	nodes, err := newCacheNodes[Item](ctx, addr, cfg.nodes, tiered.Options{
		Namespace: "dbdown", TTL: downTTL, MaxStale: maxStale,
	})
	defer closeNodes(nodes)
	if err != nil {
		return res, err
	}
	keys := make([]string, downKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%03d", i)
	}
	var (
		down  atomic.Bool
		calls atomic.Uint64 // during the outage
	)
	loader := tiered.LoaderFunc[Item](func(_ context.Context, key string) (Item, error) {
		if down.Load() {
			calls.Add(1)
			return Item{}, errDBDown
		}
		return Item{Key: key, Version: 1}, nil
	})
	if err := fillDown(ctx, nodes, keys); err != nil {
		return res, err
	}
	before := statsOf(nodes)
	runtime.GC()

	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		nr       = len(nodes) * downReaders
		reads    = make([]uint64, nr)
		errCount = make([]uint64, nr)
		firstAt  = make([]time.Duration, nr)
		firstErr = make([]error, nr)
		seed     = uint64(time.Now().UnixNano())
	)
	down.Store(true)
	base := time.Now()
	for ni, n := range nodes {
		for r := range downReaders {
			ri := ni*downReaders + r
			rng := rand.New(rand.NewPCG(seed, uint64(ri)))
			wg.Go(func() {
				for !stop.Load() {
					key := keys[rng.IntN(len(keys))]
					v, err := n.cache.GetOrLoad(ctx, key, loader)
					reads[ri]++
					if err == nil && v.Key != key {
						err = fmt.Errorf("got %+v for %s", v, key)
					}
					if err != nil {
						if errCount[ri]++; firstErr[ri] == nil {
							firstErr[ri], firstAt[ri] = fmt.Errorf("node %d, %s: %w", ni, key, err), time.Since(base)
						}
					}
					runtime.Gosched()
				}
			})
		}
	}
	select {
	case <-time.After(downOutage):
	case <-ctx.Done():
	}
	stop.Store(true)
	res.elapsed = time.Since(base)
	wg.Wait()
	res.loaderCalls = calls.Load()
	down.Store(false)
	if err := ctx.Err(); err != nil {
		return res, err
	}
	for ri := range nr {
		res.reads += reads[ri]
		res.errs += errCount[ri]
		if firstErr[ri] != nil && (res.firstErr == nil || firstAt[ri] < res.firstErrAt) {
			res.firstErr, res.firstErrAt = firstErr[ri], firstAt[ri]
		}
	}
	for i, n := range nodes {
		s := n.cache.Stats()
		res.staleServed += s.StaleServed - before[i].StaleServed
		res.nodeStats = append(res.nodeStats, s)
	}
	return res, nil
}

// fillDown loads version 1 of every key into every node, while the
// database is up.
func fillDown(ctx context.Context, nodes []*cacheNode[Item], keys []string) error {
	bulk := tiered.BulkLoaderFunc[Item](func(_ context.Context, ks []string) (map[string]Item, error) {
		m := make(map[string]Item, len(ks))
		for _, k := range ks {
			m[k] = Item{Key: k, Version: 1}
		}
		return m, nil
	})
	for i, n := range nodes {
		m, err := n.cache.GetMany(ctx, keys, bulk)
		if err == nil && len(m) != len(keys) {
			err = fmt.Errorf("%d values", len(m))
		}
		if err != nil {
			return fmt.Errorf("node %d: loading: %w", i, err)
		}
	}
	return nil
}
