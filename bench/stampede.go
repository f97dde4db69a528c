package main

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The stampede workload: -nodes nodes of one library (each its own clients
// and local cache, as separate processes would have), -callers goroutines
// on each, released together on one key that no tier holds, whose loader
// sleeps -loader. A caller's latency runs from its release to Get's return;
// followers are every caller but the one whose context the loader ran on.
// Figures per library: loader calls per key (mean and max over the keys)
// and the followers' p99. -warmup keys run first and are not counted (the
// first burst of a process grows goroutine stacks and dials connections).

func runStampede(ctx context.Context, e *env, rep *report) error {
	cfg := e.cfg
	loads := rep.row("cold-key stampede", fmt.Sprintf("loads per key, mean (max); follower p99 (loader %s)", fmtDur(cfg.loader)))
	loads.chart = &chart{title: "stampede: loads per key (mean)", lowerBetter: true}
	for _, k := range cfg.kinds {
		mean, maxLoads, p99, err := stampedeRun(ctx, e, k)
		if err != nil {
			return fmt.Errorf("%s: %w", k.name, err)
		}
		logf("stampede %s: loads per key mean %.2f max %d, follower p99 %.2f ms", k.name, mean, maxLoads, ms(p99))
		loads.set(k.name, fmt.Sprintf("%s (%d); %s", num(mean), maxLoads, fmtLatency(p99)), mean)
	}
	return nil
}

func stampedeRun(ctx context.Context, e *env, k kind) (mean float64, maxLoads int, p99 time.Duration, err error) {
	cfg := e.cfg
	if err := e.flush(ctx); err != nil {
		return 0, 0, 0, err
	}
	src := newSource(cfg.loader)
	nodes, err := openNodes(ctx, k, e.addr, "stampede", cfg.nodes)
	defer closeNodes(nodes)
	if err != nil {
		return 0, 0, 0, err
	}
	runtime.GC()
	var followers []time.Duration
	total := 0
	for i := range cfg.warmupKeys + cfg.stampedeKeys {
		key := "s" + strconv.Itoa(i)
		lat, err := stampedeKey(ctx, nodes, key, src, cfg.callers)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("key %s: %w", key, err)
		}
		if i < cfg.warmupKeys {
			continue
		}
		n := src.LoadsOf(key)
		total += n
		maxLoads = max(maxLoads, n)
		followers = append(followers, lat...)
	}
	return float64(total) / float64(cfg.stampedeKeys), maxLoads, quantile(followers, 0.99), nil
}

// stampedeKey releases callers goroutines per node on key together and
// returns the followers' latencies.
func stampedeKey(ctx context.Context, nodes []peer, key string, src *source, callers int) ([]time.Duration, error) {
	n := len(nodes) * callers
	lat := make([]time.Duration, n)
	leader := make([]atomic.Bool, n)
	errs := make([]error, n)
	release := make(chan struct{})
	var ready, done sync.WaitGroup
	ready.Add(n)
	for i := range n {
		p := nodes[i/callers]
		cctx := withLeaderFlag(ctx, &leader[i])
		done.Go(func() {
			ready.Done()
			<-release
			start := time.Now()
			v, err := p.Get(cctx, key, src)
			lat[i] = time.Since(start)
			if err == nil && v.ID != key {
				err = fmt.Errorf("read %q for %q", v.ID, key)
			}
			errs[i] = err
		})
	}
	ready.Wait()
	close(release)
	done.Wait()
	var out []time.Duration
	for i := range n {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if !leader[i].Load() {
			out = append(out, lat[i])
		}
	}
	return out, nil
}
